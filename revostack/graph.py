"""The dependency graph: cycles, topological levels, subsets, reverse order. Pure."""

from __future__ import annotations

from typing import Iterable, Mapping

Deps = Mapping[str, Iterable[str]]


def find_cycle(deps: Deps) -> list[str] | None:
    """A cycle as a path ``[a, b, c, a]``, or None. Unknown names are ignored."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {name: WHITE for name in deps}
    for root in deps:
        if colour[root] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(root, [d for d in deps[root] if d in colour])]
        path = [root]
        colour[root] = GREY
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop(0)
            if colour[nxt] == GREY:
                return path[path.index(nxt) :] + [nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                path.append(nxt)
                stack.append((nxt, [d for d in deps[nxt] if d in colour]))
    return None


def levels(deps: Deps) -> list[list[str]]:
    """Topological levels: every name's dependencies sit in earlier levels.

    Names keep their declaration order within a level. Raises ValueError on a cycle.
    """
    remaining = {name: {d for d in ds if d in deps} for name, ds in deps.items()}
    order = list(deps)
    out: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        level = [n for n in order if n in remaining and remaining[n] <= done]
        if not level:
            cycle = find_cycle(deps) or list(remaining)
            raise ValueError(" -> ".join(cycle))
        for n in level:
            del remaining[n]
        done.update(level)
        out.append(level)
    return out


def closure(deps: Deps, names: Iterable[str]) -> set[str]:
    """The named services plus everything they need, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(deps.get(n, ()))
    return seen


def dependents(deps: Deps, names: Iterable[str]) -> set[str]:
    """The named services plus everything that needs them, transitively."""
    rev: dict[str, set[str]] = {n: set() for n in deps}
    for n, ds in deps.items():
        for d in ds:
            rev.setdefault(d, set()).add(n)
    return closure(rev, names)
