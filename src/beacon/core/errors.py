"""Errors that reach a client as a 4xx with a JSON body naming each problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: where (`loc`), what (`msg`) and a stable `type` code."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_json(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


@dataclass(slots=True)
class ClientError(Exception):
    """A request Beacon refuses; `status` is the HTTP code, `problems` every reason."""

    status: int
    code: str
    message: str
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {"code": self.code, "message": self.message}}
        if self.problems:
            body["error"]["problems"] = [p.as_json() for p in self.problems]
        return body
