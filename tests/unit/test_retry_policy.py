"""Which failures are retried, and when the next attempt runs."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from notify_worker.config import ConfigError, load_settings, parse_duration
from notify_worker.delivery import AttemptResult
from notify_worker.retries import is_retryable, retry_delay

ANSWERED = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0, 1800.0)


def result(
    status: int | None = None, error: str | None = None, retry_after: str | None = None
) -> AttemptResult:
    return AttemptResult(
        started_at=ANSWERED,
        finished_at=ANSWERED,
        duration_ms=10,
        status_code=status,
        error=error,
        excerpt=None,
        retry_after=retry_after,
    )


@pytest.mark.parametrize(
    ("outcome", "retryable"),
    [
        (result(error="timeout after 30s"), True),
        (result(error="connection refused"), True),
        (result(error="the target closed the connection before answering"), True),
        (result(500, "HTTP 500 Internal Server Error"), True),
        (result(503, "HTTP 503 Service Unavailable"), True),
        (result(408, "HTTP 408 Request Timeout"), True),
        (result(429, "HTTP 429 Too Many Requests"), True),
        (result(400, "HTTP 400 Bad Request"), False),
        (result(404, "HTTP 404 Not Found"), False),
        (result(410, "HTTP 410 Gone"), False),
        (result(302, "redirect not followed (302)"), False),
        (result(error="blocked address 10.0.0.1 (private)"), False),
        (result(error="invalid URL: http://"), False),
    ],
)
def test_what_is_retried(outcome: AttemptResult, retryable: bool) -> None:
    assert is_retryable(outcome) is retryable


def test_each_step_of_the_schedule_is_jittered_by_about_a_fifth() -> None:
    for attempt, base in enumerate(SCHEDULE, start=1):
        delays = [
            retry_delay(attempt, result(500), SCHEDULE, 3600).total_seconds()
            for _ in range(200)
        ]
        assert all(base * 0.8 <= delay <= base * 1.2 for delay in delays)
        # Jitter spreads the retries of jobs that failed together.
        assert max(delays) - min(delays) > base * 0.2


def test_the_last_step_repeats() -> None:
    delay = retry_delay(9, result(500), SCHEDULE, 3600)
    assert timedelta(seconds=1440) <= delay <= timedelta(seconds=2160)


def test_retry_after_in_seconds_on_a_429_sets_the_wait() -> None:
    delay = retry_delay(1, result(429, retry_after="30"), SCHEDULE, 3600)
    assert delay == timedelta(seconds=30)


def test_retry_after_as_a_date_on_a_503_counts_from_the_answer() -> None:
    later = format_datetime(ANSWERED + timedelta(seconds=120), usegmt=True)
    delay = retry_delay(1, result(503, retry_after=later), SCHEDULE, 3600)
    assert delay == timedelta(seconds=120)


def test_retry_after_is_capped() -> None:
    delay = retry_delay(1, result(429, retry_after="999999"), SCHEDULE, 60)
    assert delay == timedelta(seconds=60)


def test_retry_after_never_shortens_the_schedule() -> None:
    delay = retry_delay(2, result(503, retry_after="1"), SCHEDULE, 3600)
    assert delay >= timedelta(seconds=240)


def test_retry_after_on_other_answers_or_unreadable_is_ignored() -> None:
    for outcome in (result(500, retry_after="600"), result(429, retry_after="soon")):
        delay = retry_delay(1, outcome, SCHEDULE, 3600)
        assert timedelta(seconds=4) <= delay <= timedelta(seconds=6)


def test_the_default_schedule_is_the_documented_one() -> None:
    assert load_settings().retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)


def test_a_schedule_reads_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_RETRY_SCHEDULE", "250ms, 2s,1m,1.5h,1d")
    assert load_settings().retry_schedule == (0.25, 2, 60, 5400, 86400)


@pytest.mark.parametrize("value", ["5s,,5m", "", "5 minutes", "5s,-1s", "fast"])
def test_a_bad_schedule_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NOTIFY_RETRY_SCHEDULE", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "NOTIFY_RETRY_SCHEDULE" in str(caught.value)


def test_a_bad_retry_after_cap_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_RETRY_AFTER_CAP_SECS", "-5")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "NOTIFY_RETRY_AFTER_CAP_SECS" in str(caught.value)


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("90m") == 5400
    assert parse_duration("12") == 12
    with pytest.raises(ValueError):
        parse_duration("30 days")
