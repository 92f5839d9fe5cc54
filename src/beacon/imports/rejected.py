"""Rows that could not be imported, written one JSON object a line with the reason.

`{"file": "events.ndjson", "line": 12, "reason": "bad_time", "error": "…", "row": "…"}`: the
row as it was in the file, so it can be fixed and imported again (as a file of its own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from beacon.core import jsonio

ROW_SHOWN_MAX = 64 * 1024


class RejectedRows:
    """An append-only file of rejected rows; opened on the first one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self.size = path.stat().st_size if path.is_file() else 0

    def truncate(self, size: int) -> None:
        """Drop what was written past `size` (rows of a batch that was never committed)."""
        self.close()
        if self.path.is_file() and self.path.stat().st_size > size:
            os.truncate(self.path, size)
        self.size = min(self.size, size)

    def write(self, *, file: str, line: int, reason: str, error: str, row: bytes) -> None:
        if self._file is None:
            self._file = open(self.path, "ab")  # held until `close`
        text = row[:ROW_SHOWN_MAX].decode(errors="replace").rstrip("\r\n")
        record = {"file": file, "line": line, "reason": reason, "error": error, "row": text}
        data = jsonio.dumps(record) + b"\n"
        self._file.write(data)
        self.size += len(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
