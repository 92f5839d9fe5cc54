"""Settings refuse unsafe production configuration."""

import pytest
from pydantic import ValidationError

from beacon.settings import Settings


def test_production_refuses_the_default_admin_token() -> None:
    with pytest.raises(ValidationError, match="BEACON_ADMIN_TOKEN"):
        Settings(environment="production")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (" change-me", "whitespace"),
        ("Ul0dgmJ8vTQ-1rl9Dq3aGkmtw3oQx7LZ2nAxXtQ0b4s\n", "whitespace"),
        ("CHANGE_ME", "placeholder"),
        ("x", "only 1 characters"),
        ("s3cret-value", "only 12 characters"),
    ],
    ids=["empty", "blank", "padded", "trailing-newline", "placeholder", "short", "12-chars"],
)
def test_production_refuses_a_weak_admin_token_saying_how_to_make_one(
    token: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", admin_token=token)

    message = str(refused.value)
    assert "BEACON_ADMIN_TOKEN" in message
    assert reason in message
    assert "secrets.token_urlsafe(32)" in message


def test_production_starts_with_a_real_secret() -> None:
    token = "Ul0dgmJ8vTQ-1rl9Dq3aGkmtw3oQx7LZ2nAxXtQ0b4s"
    assert Settings(environment="production", admin_token=token).environment == "production"


def test_development_keeps_the_placeholder_token() -> None:
    assert Settings().admin_token == "change-me"


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
