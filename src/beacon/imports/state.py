"""Resume state: how far the import of one file has committed, kept next to the file.

`<file>.import-state.json` holds one entry per target (database, source, format, mapping), so
importing a file into two databases keeps two entries. An entry records the last line
committed, the offset past it, the size of the rejected file then, and the counts so far; it
is rewritten (temporary file, then rename) after each committed batch. An entry is ignored
when the file changed since (size or modification time). Rows read twice are harmless: their
event ids are already stored, so nothing is stored twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beacon.core import jsonio

STATE_SUFFIX = ".import-state.json"
VERSION = 1


@dataclass(slots=True)
class Tally:
    """What happened to the rows of a file."""

    rows: int = 0  # records read (blank lines not counted)
    imported: int = 0  # events stored
    duplicates: int = 0  # events whose id was stored already
    rejected: int = 0
    expiring: int = 0  # imported events already past their retention
    reasons: dict[str, int] = field(default_factory=dict)  # rejections by reason

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def copy(self) -> Tally:
        return dataclasses.replace(self, reasons=dict(self.reasons))


@dataclass(slots=True)
class Progress:
    """Where a file's import stands: everything up to `line` is committed."""

    line: int = 0
    offset: int = 0  # in the decompressed stream, just past `line`
    rejected_bytes: int = 0  # size of the rejected file once `line` was read
    last_key: str | None = None  # the id of the last event committed
    tally: Tally = field(default_factory=Tally)
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Progress:
        return cls(
            line=int(raw["line"]),
            offset=int(raw["offset"]),
            rejected_bytes=int(raw["rejected_bytes"]),
            last_key=raw.get("last_key"),
            tally=Tally(**raw["tally"]),
            done=bool(raw.get("done")),
        )


class StateFile:
    """The resume state of one input file for one target."""

    def __init__(self, input_path: Path, target: str) -> None:
        self.path = input_path.with_name(input_path.name + STATE_SUFFIX)
        self.key = hashlib.sha256(target.encode()).hexdigest()[:16]
        stat = input_path.stat()
        self.fingerprint = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def load(self) -> Progress | None:
        """Return the saved progress, if any and if the file is unchanged since."""
        entry = self._entries().get(self.key)
        if not isinstance(entry, dict) or entry.get("fingerprint") != self.fingerprint:
            return None
        try:
            return Progress.from_json(entry["progress"])
        except (KeyError, TypeError, ValueError):
            return None

    def changed(self) -> bool:
        """Whether an entry exists for an earlier version of the file."""
        entry = self._entries().get(self.key)
        return isinstance(entry, dict) and entry.get("fingerprint") != self.fingerprint

    def save(self, progress: Progress) -> None:
        entries = self._entries()
        entries[self.key] = {"fingerprint": self.fingerprint, "progress": progress.as_json()}
        self._write(entries)

    def clear(self) -> None:
        """Forget this target's entry; remove the file once it holds none."""
        entries = self._entries()
        if entries.pop(self.key, None) is None:
            return
        if entries:
            self._write(entries)
        else:
            self.path.unlink(missing_ok=True)

    def _entries(self) -> dict[str, Any]:
        try:
            raw = jsonio.loads(self.path.read_bytes())
        except (OSError, jsonio.JSONDecodeError):
            return {}  # none yet, or torn by a crash: start over (dedup makes it harmless)
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            return {}
        entries = raw.get("imports")
        return entries if isinstance(entries, dict) else {}

    def _write(self, entries: dict[str, Any]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(jsonio.dumps({"version": VERSION, "imports": entries}))
        os.replace(temporary, self.path)
