"""What the engine reads of a profile: its current view and the messages recently sent to it.

The integration loads both before calling `entry.start` or `engine.advance`; nothing here is
fetched by the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beacon.segments.evaluator import Profile


@dataclass(frozen=True, slots=True)
class ProfileView:
    """A profile as branches, exits and templates read it, now.

    `consents` maps a channel to its last decision (`{"granted": bool, ...}`), `identities`
    each kind of identity the profile has (email, user_id, ...) to a value, `attributes` the
    computed attribute values by name (the hidden counts of the journey's rules too: see
    `Journey.required_attributes`), `segments` the names of the segments it is in.
    """

    id: str
    traits: Mapping[str, Any] = field(default_factory=dict)
    consents: Mapping[str, Any] = field(default_factory=dict)
    identities: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    segments: Set[str] = frozenset()

    def for_rules(self) -> Profile:
        """The profile as segments' rules read it."""
        return Profile(self.traits, self.consents, frozenset(self.identities), self.attributes)

    def variables(self) -> dict[str, Any]:
        """The profile as templates read it: id, traits, attributes, identities."""
        return {
            "id": self.id,
            "traits": dict(self.traits),
            "attributes": dict(self.attributes),
            "identities": dict(self.identities),
        }


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message sent to the profile: frequency caps count these (`journey` None: not a
    journey's message, counted by the deployment's default caps only)."""

    channel: str
    sent_at: datetime
    journey: str | None = None
