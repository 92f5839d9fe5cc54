"""The settings both clients share, checked once."""

from __future__ import annotations

from dataclasses import dataclass

from beacon_sdk.batching import MAX_BATCH_EVENTS
from beacon_sdk.delivery import OnError
from beacon_sdk.retry import RetryPolicy
from beacon_sdk.version import VERSION

EVENTS_PATH = "/api/v1/events"
USER_AGENT = f"beacon-sdk-python/{VERSION}"


@dataclass(frozen=True, slots=True)
class Options:
    write_key: str
    host: str
    batch_size: int
    flush_interval: float
    max_queue: int
    timeout: float
    retry: RetryPolicy
    gzip: bool
    on_error: OnError | None
    sync_mode: bool

    def __post_init__(self) -> None:
        if not self.write_key:
            raise ValueError("write_key is required (a source's write key)")
        if not self.host.startswith(("http://", "https://")):
            raise ValueError("host must be an http:// or https:// URL")
        if not 1 <= self.batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_EVENTS}")
        if self.max_queue < 1 or self.flush_interval <= 0 or self.timeout <= 0:
            raise ValueError("max_queue, flush_interval and timeout must be positive")

    @property
    def url(self) -> str:
        return self.host.rstrip("/") + EVENTS_PATH

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.write_key}", "User-Agent": USER_AGENT}
