"""Identifiers: time-ordered UUIDv7 strings, so ids sort by creation time."""

import uuid_utils


def new_id() -> str:
    """Return a new UUIDv7 as its canonical 36-character string."""
    return str(uuid_utils.uuid7())
