"""The Jinja2 sandbox templates run in, and the data they see.

Templates see plain data only: JSON objects become `DataObject`s whose attributes are their keys
(never dict methods: a trait named `items` reads the trait), lists become `DataList`s, and both
know their path (`profile.traits.address`) so a missing value is named in full. A missing
value is `Missing`: reading into it stays missing (`a.b.c` names all of `a.b.c`), `default` and
`is defined` see it, and any other use (output, `if`, a loop, a filter) fails the render with
its path. A null in an object counts as missing. Output per part and repeated strings are
bounded; `**` takes small exponents only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT_CHARS = 1_000_000
MAX_EXPONENT = 64


class DataObject(dict[str, Any]):
    """A JSON object as a template sees it."""

    __slots__ = ("path",)

    def __init__(self, items: Mapping[str, Any], path: str) -> None:
        super().__init__(items)
        self.path = path


class DataList(list[Any]):
    """A JSON array as a template sees it."""

    __slots__ = ("path",)

    def __init__(self, items: list[Any], path: str) -> None:
        super().__init__(items)
        self.path = path


def template_data(value: Any, path: str) -> Any:
    """Return `value` as templates see it: objects and lists that know their path, no nulls."""
    if isinstance(value, Mapping):
        return DataObject(
            {
                str(key): template_data(item, _child(path, str(key)))
                for key, item in value.items()
                if item is not None
            },
            path,
        )
    if isinstance(value, list | tuple):
        return DataList([template_data(item, f"{path}[{i}]") for i, item in enumerate(value)], path)
    return value


class Missing(StrictUndefined):
    """A value that is not there: fails any use but `default` and `is defined`, naming its path."""

    __slots__ = ()

    @property
    def path(self) -> str:
        """The full path of what was read, like `profile.traits.address.city`."""
        obj, name = self._undefined_obj, self._undefined_name
        base = obj.path if isinstance(obj, DataObject | DataList | Missing) else None
        if name is None:
            return base or "a value"
        if base is None:
            return str(name)
        return f"{base}{name}" if name.startswith("[") else _child(base, name)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        return f"{self.path} is missing and the template gives it no default"

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self._deeper(name)

    def __getitem__(self, key: Any) -> Any:
        return self._deeper(_key_name(key))

    def _deeper(self, name: str) -> Missing:
        return Missing(
            hint=self._undefined_hint, obj=self, name=name, exc=self._undefined_exception
        )


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox over template data, with missing values that name themselves."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=Missing, finalize=_refuse_null)
        # lipsum writes filler text; nothing a message needs, and it is not cheap.
        self.globals.pop("lipsum", None)
        self.policies["json.dumps_function"] = _dumps

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, DataObject):
            return obj[attribute] if attribute in obj else self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, DataObject):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=_key_name(argument))
        if isinstance(obj, DataList) and isinstance(argument, int):
            if -len(obj) <= argument < len(obj):
                return obj[argument]
            return self.undefined(obj=obj, name=_key_name(argument))
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponents above {MAX_EXPONENT} are not allowed")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list) and isinstance(times, int):
                    if len(seq) * times > MAX_OUTPUT_CHARS:
                        raise SecurityError("repeating that would pass the output limit")
        return super().call_binop(context, operator, left, right)


def render_bounded(template: Template, data: Mapping[str, Any]) -> str:
    """Render `template` over `data`, stopping once the output passes `MAX_OUTPUT_CHARS`."""
    chunks, size = [], 0
    for chunk in template.generate(data):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise SecurityError(f"the output passed {MAX_OUTPUT_CHARS:,} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise UndefinedError("a null value was written; give it a default")
    return value


def _dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=_json_default, **kwargs)


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON")


def _key_name(key: Any) -> str:
    """How a key read with [] is named in a path: text as a field, anything else as `[key]`."""
    return key if isinstance(key, str) else f"[{key!r}]"


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"
