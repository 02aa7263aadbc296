"""The retry policy: which failures get another try, and after how long."""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, timedelta

from .delivery import AttemptResult

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
# The answers whose Retry-After says when to come back (RFC 9110, 10.2.3).
RETRY_AFTER_STATUS = frozenset({429, 503})
# Failures without an answer that another try cannot change.
FINAL_ERRORS = ("blocked address", "invalid URL")
JITTER = 0.2


def is_retryable(result: AttemptResult) -> bool:
    """Timeouts, connection errors, 5xx, 408 and 429 may pass on another try.

    Any other answer (a 4xx, a redirect) and a blocked address are final.
    """
    if result.status_code is None:
        return not (result.error or "").startswith(FINAL_ERRORS)
    return result.status_code in RETRYABLE_STATUS


def retry_delay(
    attempt: int,
    result: AttemptResult,
    schedule: tuple[float, ...],
    retry_after_cap_secs: float,
) -> timedelta:
    """The wait after attempt number `attempt` failed.

    The schedule's step for that attempt (its last step repeats), with 20%
    jitter either way so jobs that failed together do not return together.
    A Retry-After on a 429 or 503 lengthens the wait to what the target
    asked, up to the cap: a target cannot park a job for a month.
    """
    base = schedule[min(attempt, len(schedule)) - 1]
    delay = base * random.uniform(1 - JITTER, 1 + JITTER)
    asked = retry_after_secs(result)
    if asked is not None:
        delay = max(delay, min(asked, retry_after_cap_secs))
    return timedelta(seconds=delay)


def retry_after_secs(result: AttemptResult) -> float | None:
    """Seconds from the answer that its Retry-After asks for, if it may ask."""
    if result.status_code not in RETRY_AFTER_STATUS or not result.retry_after:
        return None
    value = result.retry_after.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - result.finished_at).total_seconds())
