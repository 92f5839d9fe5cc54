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
