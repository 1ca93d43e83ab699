"""The dependency graph: levels, subsets (closure), dependents, cycles. Pure."""

from __future__ import annotations

import pytest

from revostack import graph

FULLSTACK = {
    "db": [],
    "migrate": ["db"],
    "backend": ["db", "migrate"],
    "frontend": ["backend"],
    "docs": [],
}


def test_levels_put_dependencies_first_and_keep_declaration_order():
    assert graph.levels(FULLSTACK) == [["db", "docs"], ["migrate"], ["backend"], ["frontend"]]


def test_levels_of_independent_services_are_one_level():
    assert graph.levels({"b": [], "a": [], "c": []}) == [["b", "a", "c"]]


def test_levels_diamond():
    deps = {"top": ["left", "right"], "left": ["base"], "right": ["base"], "base": []}
    assert graph.levels(deps) == [["base"], ["left", "right"], ["top"]]


def test_levels_ignore_names_outside_the_graph():
    # a subset: backend's dependency on "db" is outside it
    assert graph.levels({"backend": ["db"], "frontend": ["backend"]}) == [["backend"], ["frontend"]]


def test_levels_empty():
    assert graph.levels({}) == []


def test_levels_raise_on_a_cycle_with_its_path():
    with pytest.raises(ValueError) as info:
        graph.levels({"ok": [], "a": ["b"], "b": ["c"], "c": ["a"]})
    assert str(info.value) == "a -> b -> c -> a"


def test_every_dependency_sits_in_an_earlier_level():
    deps = {f"s{i}": [f"s{j}" for j in range(i) if (i * j) % 3 == 1] for i in range(12)}
    where = {n: k for k, level in enumerate(graph.levels(deps)) for n in level}
    assert set(where) == set(deps)
    for n, ds in deps.items():
        for d in ds:
            assert where[d] < where[n], (n, d)


def test_closure_is_the_names_and_what_they_need():
    assert graph.closure(FULLSTACK, ["frontend"]) == {"frontend", "backend", "migrate", "db"}
    assert graph.closure(FULLSTACK, ["migrate"]) == {"migrate", "db"}
    assert graph.closure(FULLSTACK, ["docs", "db"]) == {"docs", "db"}
    assert graph.closure(FULLSTACK, []) == set()


def test_closure_survives_a_cycle():
    assert graph.closure({"a": ["b"], "b": ["a"]}, ["a"]) == {"a", "b"}


def test_dependents_are_the_names_and_what_needs_them():
    assert graph.dependents(FULLSTACK, ["db"]) == {"db", "migrate", "backend", "frontend"}
    assert graph.dependents(FULLSTACK, ["backend"]) == {"backend", "frontend"}
    assert graph.dependents(FULLSTACK, ["frontend"]) == {"frontend"}
    assert graph.dependents(FULLSTACK, ["docs"]) == {"docs"}


def test_find_cycle_none_on_a_dag():
    assert graph.find_cycle(FULLSTACK) is None
    assert graph.find_cycle({}) is None


@pytest.mark.parametrize("deps, cycle", [
    ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
    ({"a": ["a"]}, ["a", "a"]),
    ({"x": [], "a": ["x", "b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
    ({"top": ["a"], "a": ["b"], "b": ["a"]}, ["a", "b", "a"]),  # the cycle only, not the path to it
])
def test_find_cycle_names_the_cycle(deps, cycle):
    assert graph.find_cycle(deps) == cycle


def test_find_cycle_ignores_unknown_names():
    assert graph.find_cycle({"a": ["ghost"], "b": ["a"]}) is None


def test_deep_chain_does_not_recurse():
    n = 1500  # well past the default recursion limit
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(n)}
    assert graph.find_cycle(deps) is None
    assert len(graph.levels(deps)) == n
    deps["s0"] = [f"s{n - 1}"]
    cycle = graph.find_cycle(deps)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == n + 1
