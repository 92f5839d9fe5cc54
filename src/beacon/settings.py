"""Beacon's one validated configuration object, read from `BEACON_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_ADMIN_TOKEN = "change-me"  # noqa: S105 - the placeholder production mode refuses
MIN_ADMIN_TOKEN_LENGTH = 32
MAX_RETENTION_DAYS = 2**31 - 1  # a 32-bit column; reaching back before year 1 keeps everything
# Placeholders from examples and habit; compared without case, spaces, dashes or underscores.
KNOWN_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "changemeplease",
        "admin",
        "administrator",
        "password",
        "secret",
        "token",
        "admintoken",
        "test",
        "testtoken",
        "default",
        "beacon",
        "letmein",
        "xxx",
    }
)


def admin_token_flaw(token: str) -> str | None:
    """Say what makes `token` unfit to guard a production admin API, or None if nothing."""
    if not token.strip():
        return "is empty"
    if token != token.strip():
        return "starts or ends with whitespace (a copy-paste slip?)"
    if "".join(c for c in token.lower() if c.isalnum()) in KNOWN_PLACEHOLDERS:
        return "is a well-known placeholder"
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        return f"is only {len(token)} characters long"
    return None


class Settings(BaseSettings):
    """Everything an operator can set; built once by the entry point and passed down."""

    model_config = SettingsConfigDict(env_prefix="BEACON_", env_file=None, extra="ignore")

    environment: Literal["development", "production"] = "development"
    clock: Literal["system", "manual"] = Field(
        default="system",
        description="Business time: the system's, or manual (tests and demos: it stands still"
        " until POST /api/clock/advance moves it, for every process; refused in production).",
    )
    database_url: str = Field(
        default="sqlite:///.beacon/beacon.db",
        description="sqlite:///PATH (embedded) or postgresql://USER@HOST:PORT/DB (scale-out).",
    )
    bus_url: str = Field(
        default="memory://",
        description="memory:// (in-process) or redis://HOST:PORT/DB (Redis Streams).",
    )
    bus_prefix: str = Field(
        default="beacon", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Redis key prefix."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8686, ge=1, le=65535)
    admin_token: str = DEFAULT_ADMIN_TOKEN
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    max_event_bytes: int = Field(default=32 * 1024, ge=256)
    max_request_bytes: int = Field(default=500 * 1024, ge=1024)
    max_events_per_request: int = Field(default=1000, ge=1)
    require_registered_event_types: bool = False

    identity_conflict_policy: Literal["switch", "merge"] = Field(
        default="switch",
        description="When a known profile identifies as someone else: switch to that person's"
        " profile (default) or merge the two known profiles.",
    )
    retention_days: int = Field(default=730, ge=1, le=MAX_RETENTION_DAYS)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    retention_batch_size: int = Field(default=5000, ge=1, le=10_000)
    webhook_log_days: int = Field(
        default=30,
        ge=1,
        description="How long webhook attempts, and webhook messages delivered or dead, are"
        " kept (the attempts log and replays reach this far back).",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    commit_batch_max: int = Field(default=2000, ge=1)
    bus_partitions: int = Field(default=8, ge=1, le=256)
    relay_sweep_seconds: float = Field(default=5.0, gt=0)
    bus_memory_capacity: int = Field(
        default=10_000,
        ge=1,
        description="Memory bus: messages queued per consumer before the outbox relay waits"
        " (committed rows wait in the outbox meanwhile).",
    )
    consumer_retry_base_seconds: float = Field(
        default=0.5,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="A failed message waits this long before its second attempt, then twice"
        " as long after each failure...",
    )
    consumer_retry_max_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="... but never longer than this.",
    )
    worker_heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="How often a process running consumers records that it lives.",
    )
    processed_messages_days: int = Field(
        default=14,
        ge=1,
        description="How long consumers remember the effects they had (idempotency keys).",
    )
    timers_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        allow_inf_nan=False,
        description="How often a timers runner looks for timers other processes scheduled.",
    )
    timers_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Timers claimed and fired per transaction."
    )
    cache_ttl_seconds: float = Field(default=2.0, ge=0)
    database_pool_size: int = Field(default=8, ge=1)
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Modules (comma-separated) whose register(registry, platform) adds consumers,"
        " periodic jobs and timer kinds of your own.",
    )

    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$",
        description="Where people's browsers and mail clients reach this Beacon: the base of the"
        " links in messages (open pixel, clicks, view online, unsubscribe); default"
        " http://HOST:PORT.",
    )
    link_secrets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Secrets (comma-separated, the signing one first, each at least 32"
        " characters) of the links in messages; unset, one is derived from the admin token.",
    )
    delivery_channels: dict[str, str] = Field(
        default_factory=dict,
        description='Which channel sends each kind of message, as JSON ({"email": "email",'
        ' "sms": "sms", "push": "web_push"}); a kind not named goes to "capture", which'
        " sends nothing and keeps what would have gone out in the delivery log.",
    )
    channel_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='Each channel\'s settings, as JSON ({"email": {"host": "smtp.example.com",'
        ' "from_address": "shop@example.com"}}); GET /api/channels lists what each needs.',
    )
    outbound_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Internal networks (comma-separated, like 10.0.0.0/8 or 127.0.0.1/32)"
        " webhooks and push may be sent to; others' loopback, private and link-local"
        " addresses are refused.",
    )
    delivery_concurrency: int = Field(
        default=50, ge=1, le=1000, description="Sends one process makes at the same time."
    )
    webhook_batch_max_items: int = Field(
        default=100, ge=1, le=10_000, description="Most elements in one webhook's JSON array."
    )
    webhook_batch_max_bytes: int = Field(
        default=256 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest webhook body."
    )
    webhook_batch_seconds: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest an element waits for its batch (business time).",
    )
    webhook_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="Longest one webhook request may take, redirects included.",
    )
    webhook_disable_after_days: float = Field(
        default=5.0,
        gt=0,
        allow_inf_nan=False,
        description="An endpoint failing this long without a success is disabled.",
    )

    # How long `beacon serve` lets a client take; a day bounds each, past any sensible value.
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="From a request's first byte until its headers are complete; then 408.",
    )
    http_body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Longest pause while a request body arrives; then the connection is closed.",
    )
    http_body_total_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Longest a whole request body may take to arrive, however it trickles.",
    )
    http_keepalive_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="How long a connection may wait idle for its first or next request.",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Connections one server process holds; past it a new one is answered 503.",
    )

    @field_validator("plugins", "link_secrets", "outbound_allow_networks", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _retry_cap_above_base(self) -> Settings:
        if self.consumer_retry_max_seconds < self.consumer_retry_base_seconds:
            raise ValueError(
                "BEACON_CONSUMER_RETRY_MAX_SECONDS must not be below"
                " BEACON_CONSUMER_RETRY_BASE_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _refuse_manual_clock_in_production(self) -> Settings:
        if self.environment == "production" and self.clock == "manual":
            raise ValueError(
                "BEACON_CLOCK=manual is for tests and demos (time stands still until advanced);"
                " production runs on BEACON_CLOCK=system"
            )
        return self

    @model_validator(mode="after")
    def _refuse_weak_secret_in_production(self) -> Settings:
        if self.environment == "production":
            flaw = admin_token_flaw(self.admin_token)
            if flaw is not None:
                raise ValueError(
                    f"BEACON_ADMIN_TOKEN {flaw}; in production it must be a secret of at least"
                    f" {MIN_ADMIN_TOKEN_LENGTH} characters, e.g. the output of: python3 -c"
                    " 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        """Return the SQLite file path named by `database_url`."""
        return Path(self.database_url.split(":///", 1)[1])
