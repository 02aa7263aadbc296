import ipaddress

import pytest

from notify_worker.config import ConfigError, load_settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "NOTIFY_MAX_CONCURRENT", "NOTIFY_TIMEOUT_SECS"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.max_concurrent == 4
    assert settings.timeout_secs == 30
    assert settings.queue_size == 100
    assert settings.max_attempts == 1
    assert settings.embedded_database
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFY_MAX_CONCURRENT", "four"),
        ("NOTIFY_MAX_CONCURRENT", "0"),
        ("NOTIFY_TIMEOUT_SECS", "-1"),
        ("NOTIFY_QUEUE_SIZE", "1e3x"),
        ("NOTIFY_ALLOWED_NETWORKS", "127.0.0.0/8,banana"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("NOTIFY_PORT", "70000"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_allowed_networks_parse_as_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_ALLOWED_NETWORKS", "127.0.0.0/8, ::1/128")
    settings = load_settings()
    assert settings.allowed_networks == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def test_a_heartbeat_slower_than_half_the_stale_limit_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_HEARTBEAT_SECS", "60")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "NOTIFY_WORKER_STALE_SECS" in str(caught.value)
    assert "NOTIFY_HEARTBEAT_SECS" in str(caught.value)


def test_log_level_ignores_case_and_nan_is_not_a_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_LOG_LEVEL", "DEBUG")
    assert load_settings().log_level == "debug"
    monkeypatch.setenv("NOTIFY_TIMEOUT_SECS", "nan")
    with pytest.raises(ConfigError, match="NOTIFY_TIMEOUT_SECS='nan'"):
        load_settings()
