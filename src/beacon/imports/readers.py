"""Streaming records out of an input file, plain or gzip-compressed, never holding it whole.

A record is one line (NDJSON formats) or one CSV record, numbered from 1 by the line it
starts on, with the offset just past it in the decompressed stream: resuming seeks there.
Progress is reported in bytes of the file on disk, so a compressed file's bar is accurate too.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
READ_BUFFER = 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024  # a longer line is refused whole, never held in memory


class InputError(Exception):
    """The file cannot be read: missing, unreadable, or not what it claims to be."""


@dataclass(slots=True)
class Record:
    number: int  # the line the record starts on
    raw: bytes  # as in the file, line ending included
    end: int  # offset just past the record in the decompressed stream
    values: list[str] | None = None  # a CSV record's fields
    problem: str | None = None  # why the record cannot be read at all


class InputFile:
    """One input file opened for reading; gzip is recognised by its magic bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._disk = io.BufferedReader(io.FileIO(path), READ_BUFFER)
            self.size = path.stat().st_size
            self.compressed = self._disk.peek(2)[:2] == GZIP_MAGIC
        except IsADirectoryError as exc:
            raise InputError(f"{path} is a directory, not a file") from exc
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.stream: BinaryIO | gzip.GzipFile = (
            gzip.GzipFile(fileobj=self._disk) if self.compressed else self._disk
        )

    def close(self) -> None:
        self.stream.close()
        self._disk.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def position(self) -> int:
        """Bytes of the file on disk read so far."""
        return self._disk.tell()

    def lines(self, *, start: int = 0, number: int = 0) -> Iterator[Record]:
        """Yield each line from offset `start`, numbered after `number`."""
        self._seek(start)
        offset = start
        readline = self.stream.readline
        try:
            while line := readline(MAX_RECORD_BYTES):
                number += 1
                offset += len(line)
                if len(line) == MAX_RECORD_BYTES and not line.endswith(b"\n"):
                    offset += self._skip_rest_of_line()
                    yield Record(number, line[:200], offset, problem=_too_long())
                    continue
                yield Record(number, line, offset)
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read past line {number}: {exc}") from exc

    def csv_records(
        self, *, delimiter: str, start: int = 0, number: int = 0
    ) -> tuple[list[str], Iterator[Record]]:
        """Return the header and an iterator over the records after offset `start`."""
        self._seek(0)
        feed = _LineFeed(self.stream, offset=0, number=0)
        header_reader = csv.reader(feed, delimiter=delimiter)
        try:
            header = next(header_reader)
        except StopIteration:
            raise InputError(f"{self.path} is empty: a CSV file needs a header row") from None
        except (csv.Error, OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read the CSV header: {exc}") from exc
        if header:
            header[0] = header[0].removeprefix("\ufeff")
        if start <= feed.offset:
            start, number = feed.offset, feed.number
        return header, self._records(delimiter, start, number)

    def _records(self, delimiter: str, start: int, number: int) -> Iterator[Record]:
        self._seek(start)
        feed = _LineFeed(self.stream, offset=start, number=number)
        reader = csv.reader(feed, delimiter=delimiter)
        while True:
            first_line = feed.number + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(first_line, feed.take(), feed.offset, problem=f"invalid CSV: {exc}")
                continue
            except (OSError, EOFError) as exc:
                raise InputError(
                    f"{self.path}: cannot read past line {feed.number}: {exc}"
                ) from exc
            raw = feed.take()
            if not values:
                continue  # a blank line
            problem = _too_long() if feed.truncated else None
            if feed.undecodable:
                problem = "the record is not valid UTF-8"
            feed.truncated = feed.undecodable = False
            yield Record(first_line, raw, feed.offset, values=values, problem=problem)

    def _seek(self, offset: int) -> None:
        try:
            self.stream.seek(offset)
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot seek to byte {offset}: {exc}") from exc

    def _skip_rest_of_line(self) -> int:
        skipped = 0
        while chunk := self.stream.readline(MAX_RECORD_BYTES):
            skipped += len(chunk)
            if chunk.endswith(b"\n"):
                break
        return skipped


class _LineFeed:
    """Feeds decoded lines to `csv.reader`, remembering the raw bytes of the current record."""

    def __init__(self, stream: BinaryIO | gzip.GzipFile, *, offset: int, number: int) -> None:
        self._readline = stream.readline
        self._stream = stream
        self.offset = offset
        self.number = number
        self.raw: list[bytes] = []
        self.undecodable = False
        self.truncated = False

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        line = self._readline(MAX_RECORD_BYTES)
        if not line:
            raise StopIteration
        self.number += 1
        self.offset += len(line)
        if len(line) == MAX_RECORD_BYTES and not line.endswith(b"\n"):
            self.truncated = True
            while chunk := self._readline(MAX_RECORD_BYTES):
                self.offset += len(chunk)
                if chunk.endswith(b"\n"):
                    break
            line = line[:200] + b"\n"
        self.raw.append(line)
        try:
            return line.decode()
        except UnicodeDecodeError:
            self.undecodable = True
            return line.decode(errors="replace")

    def take(self) -> bytes:
        """Return the raw bytes of the record just read, and start the next."""
        raw = b"".join(self.raw)
        self.raw.clear()
        return raw


def _too_long() -> str:
    return f"the record is longer than {MAX_RECORD_BYTES} bytes"
