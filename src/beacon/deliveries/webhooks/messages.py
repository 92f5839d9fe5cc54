"""`webhook.due`: a webhook message (a batch) is to be posted now."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from beacon.bus.messages import DELIVERIES_TOPIC, MessageType, declare

WEBHOOK_DUE = "webhook.due"


@declare
@dataclass(frozen=True, slots=True)
class WebhookDue:
    """Attempt number `attempt` of the webhook message `message_id` is due."""

    TYPE: ClassVar[MessageType] = MessageType(WEBHOOK_DUE, 1, DELIVERIES_TOPIC)

    message_id: str
    endpoint_id: str
    attempt: int

    @property
    def id(self) -> str:
        return f"{self.message_id}:{self.attempt}"

    @property
    def partition_key(self) -> str:
        """The endpoint: one endpoint's posts go in order, one at a time per batch."""
        return self.endpoint_id

    def to_body(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "endpoint_id": self.endpoint_id,
            "attempt": self.attempt,
            "v": self.TYPE.version,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        cls.TYPE.check_version(body)
        return cls(body["message_id"], body["endpoint_id"], body["attempt"])
