"""The flow between steps: every name exists, every step is reachable, no loop runs forever.

The flow is read from the document's steps as written (a step refused for another reason
still names where it goes), so one bad step does not make others look unknown or unreachable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from beacon.core.jsonio import Path

WAITING_TYPES = ("wait", "wait_for_event")


def check_flow(reading: Any, start: str | None, steps: Mapping[str, Any]) -> None:
    """Record unknown step names, unreachable steps and loops with no wait in them.

    `steps` maps each step's name to its body as written; `reading` collects the problems.
    """
    if start is not None and start not in steps:
        reading.add(("start",), "unknown_step", f"no step {start!r} (known: {_known(steps)})")
    edges: dict[str, list[str]] = {}
    for name, body in steps.items():
        edges[name] = []
        for at, target in targets(body):
            if target in steps:
                edges[name].append(target)
            else:
                reading.add(
                    ("steps", name, *at),
                    "unknown_step",
                    f"no step {target!r} (known: {_known(steps)})",
                )
    if start is not None and start in steps:
        reached = _reachable(start, edges)
        for name in steps:
            if name not in reached:
                reading.add(
                    ("steps", name), "unreachable", f"no path from {start!r} leads to {name!r}"
                )
    for loop in _loops_without_wait(steps, edges):
        reading.add(
            ("steps", loop[0]),
            "loop_without_wait",
            f"steps {', '.join(loop)} can go round in a circle without waiting (forever):"
            " put a wait in the loop",
        )


def targets(body: Any) -> Iterator[tuple[Path, str]]:
    """Yield each step name a step's body names as where to go, with the key naming it."""
    if not isinstance(body, Mapping):
        return
    for key in ("next", "on_event", "on_timeout", "then", "else"):
        if isinstance(body.get(key), str):
            yield (key,), body[key]
    branches = body.get("branches")
    for index, branch in enumerate(branches if isinstance(branches, list) else ()):
        if isinstance(branch, Mapping) and isinstance(branch.get("next"), str):
            yield ("branches", index, "next"), branch["next"]


def _known(steps: Mapping[str, Any]) -> str:
    return ", ".join(sorted(steps)) or "none"


def _reachable(start: str, edges: Mapping[str, list[str]]) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in edges[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _loops_without_wait(
    steps: Mapping[str, Any], edges: Mapping[str, list[str]]
) -> list[list[str]]:
    """Return each strongly connected group of non-waiting steps that holds a cycle."""
    active = {
        name
        for name, body in steps.items()
        if not (isinstance(body, Mapping) and body.get("type") in WAITING_TYPES)
    }
    graph = {name: [t for t in edges[name] if t in active] for name in active}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    counter = 0
    for root in sorted(graph):  # Tarjan's algorithm, iterative: a document may be long
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph[node]
            if position < len(children):
                work.append((node, position + 1))
                child = children[position]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in graph[node]:
                    loops.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return loops
