"""Settings refuse unsafe production configuration."""

import pytest
from pydantic import ValidationError

from beacon.settings import Settings


def test_production_refuses_the_default_admin_token() -> None:
    with pytest.raises(ValidationError, match="BEACON_ADMIN_TOKEN"):
        Settings(environment="production")


def test_production_starts_with_a_real_secret() -> None:
    assert (
        Settings(environment="production", admin_token="s3cret-value").environment == "production"
    )


def test_settings_come_from_beacon_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEACON_PORT", "9000")
    monkeypatch.setenv("BEACON_DATABASE_URL", "postgresql://db/beacon")
    settings = Settings()
    assert settings.port == 9000
    assert not settings.is_sqlite


HTTP_TIMEOUTS = [
    "http_header_timeout_seconds",
    "http_body_timeout_seconds",
    "http_body_total_timeout_seconds",
    "http_keepalive_timeout_seconds",
]


@pytest.mark.parametrize("name", HTTP_TIMEOUTS)
@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan", "100000"])
def test_http_timeouts_must_be_positive_and_at_most_a_day(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"BEACON_{name.upper()}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_http_max_connections_must_be_a_positive_count(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BEACON_HTTP_MAX_CONNECTIONS", value)
    with pytest.raises(ValidationError, match="http_max_connections"):
        Settings()


def test_http_limits_have_defaults_and_come_from_beacon_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = Settings()
    assert all(getattr(defaults, name) > 0 for name in HTTP_TIMEOUTS)
    assert defaults.http_max_connections >= 1
    monkeypatch.setenv("BEACON_HTTP_HEADER_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("BEACON_HTTP_MAX_CONNECTIONS", "64")
    settings = Settings()
    assert settings.http_header_timeout_seconds == 2.5
    assert settings.http_max_connections == 64
