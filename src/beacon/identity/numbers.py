"""How a JSON number names a person: by its exact decimal text, or not at all.

JSON decoding gives integers within 64 bits as `int`, exact; integers past 64 bits and any
fraction come as `float`, whose text is not what the client sent (`1180591620717411303424` and
`1180591620717411303425` both read as `1.1805916207174113e+21`), so two people could become
one. Every place a number becomes an identity (Segment, Amplitude, `/track` identify, the
server API, the import) takes integers as their text and refuses floats with this message.
"""

from __future__ import annotations

import re
from typing import Any

INEXACT_ID = (
    "a number naming a person must be a whole number within 64 bits; send larger or"
    " fractional ids as strings"
)
INEXACT_ID_TYPE = "inexact_number"
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def id_text(value: Any) -> Any:
    """Return an integer as its decimal text; any other value unchanged (floats for the caller
    to refuse with `INEXACT_ID`)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def is_inexact_id(value: Any) -> bool:
    """Whether `value` is a number that cannot name a person exactly."""
    return isinstance(value, float)


def could_be_a_number(name: str) -> bool:
    """Whether a client may have sent identity `name` as a JSON number."""
    return _INTEGER_TEXT.fullmatch(name) is not None
