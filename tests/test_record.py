"""revostack.record: the planning model's records behave as the frozen dataclasses they replace."""

from __future__ import annotations

import pytest

from revostack.record import factory, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: dict = factory(dict)

    @property
    def total(self) -> int:
        return self.x + self.y


@record(frozen=False)
class Box:
    name: str
    items: list = factory(list)


def test_init_by_position_keyword_and_default():
    assert (Point(1).x, Point(1).y) == (1, 0)
    assert Point(1, 2).total == 3
    assert Point(y=5, x=1).y == 5
    assert Point(1, tags={"a": "b"}).tags == {"a": "b"}


def test_factory_gives_each_instance_its_own_value():
    a, b = Box("a"), Box("b")
    a.items.append(1)
    assert b.items == [] and a.items == [1]
    assert Point(1).tags is not Point(1).tags


def test_equality_and_hash_by_value():
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != (1, 2, {})  # another type is never equal
    assert len({Point(1, 2, tags=None), Point(1, 2, tags=None)}) == 1
    with pytest.raises(TypeError):
        hash(Box("a"))  # mutable records are not hashable, as a dataclass's are not


def test_frozen_refuses_assignment_mutable_allows_it():
    p = Point(1)
    with pytest.raises(AttributeError):
        p.x = 2
    with pytest.raises(AttributeError):
        del p.x
    b = Box("a")
    b.name = "b"
    assert b.name == "b"


def test_replace_makes_a_changed_copy():
    p = Point(1, 2)
    q = replace(p, y=3)
    assert (q.x, q.y, p.y) == (1, 3, 2)
    with pytest.raises(TypeError):
        replace(p, z=1)


def test_wrong_arguments_are_type_errors():
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected argument 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="positional"):
        Point(1, 2, {}, 4)


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 1
            b: int


def test_repr_names_the_fields():
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags={})"
