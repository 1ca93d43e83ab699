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
    """Topological levels: every name's dependencies sit in earlier levels (a name's level is
    the length of the longest chain of dependencies below it, found once per name: a chain of
    1,000 services costs 1,000 steps, not 1,000 scans of 1,000).

    Names keep their declaration order within a level. Raises ValueError on a cycle.
    """
    known = {name: [d for d in ds if d in deps] for name, ds in deps.items()}
    depth: dict[str, int] = {}
    for root in known:
        if root in depth:
            continue
        stack = [(root, iter(known[root]))]
        on_path = {root}
        while stack:
            node, todo = stack[-1]
            for d in todo:
                if d in depth:
                    continue
                if d in on_path:
                    raise ValueError(" -> ".join(find_cycle(deps) or [node, d]))
                on_path.add(d)
                stack.append((d, iter(known[d])))
                break
            else:
                stack.pop()
                on_path.discard(node)
                depth[node] = 1 + max((depth[d] for d in known[node]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in known:
        out[depth[name]].append(name)
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
