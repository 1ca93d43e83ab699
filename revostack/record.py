"""Records for the planning model: what ``@dataclass`` gives it, without what it costs.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``) and compiles an
``__init__``, ``__repr__``, ``__eq__`` and ``__setattr__`` with ``exec`` for every class: about
23 ms of the ~85 ms that ``revostack ports`` spent beyond the interpreter (docs/performance.md).
A record here is built at import with no code generation: functions made once per class read
its annotations in order, with class-level defaults and ``factory(...)`` for a fresh value
per instance. Records compare and hash by value and, when frozen, refuse assignment. ``replace``
makes a changed copy. Nothing here runs per attribute access, so a record reads as fast as any
object.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


class factory:
    """A default made anew for each instance (``field(default_factory=...)``)."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]):
        self.make = make


def record(cls: type[T] | None = None, *, frozen: bool = True):
    """``@record`` (frozen) or ``@record(frozen=False)``."""
    if cls is None:
        return lambda c: _build(c, frozen)
    return _build(cls, frozen)


def _build(cls, frozen: bool):
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    for n, v in defaults.items():
        if isinstance(v, factory):
            delattr(cls, n)  # read through __dict__ only: a class attribute would hide nothing useful
    required = [n for n in names if n not in defaults]
    first_default = next((i for i, n in enumerate(names) if n in defaults), len(names))
    if any(n in required for n in names[first_default:]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    cls_name = cls.__name__

    name_set = frozenset(names)
    plain = {n: v for n, v in defaults.items() if not isinstance(v, factory)}
    made = [(i, n, v) for i, (n, v) in enumerate((n, defaults.get(n)) for n in names) if isinstance(v, factory)]
    n_names, n_required = len(names), len(required)

    def __init__(self, *args, **kw):
        # whole-dict operations, not a loop over every field: a Service has ~30 of them and a
        # plan of 200 services makes ~2,500 records (`revostack check` at 200: ~3 ms)
        if len(args) > n_names:
            raise TypeError(f"{cls_name}() takes {n_names} positional arguments but {len(args)} were given")
        d = self.__dict__
        d.update(plain)  # the defaults first, then what was given over them
        if args:
            d.update(zip(names, args))
        if kw:
            if not kw.keys() <= name_set or (args and not kw.keys().isdisjoint(names[:len(args)])):
                extra = next(k for k in kw if k not in name_set or k in names[:len(args)])
                raise TypeError(f"{cls_name}() got {'multiple values for' if extra in name_set else 'an unexpected'} "
                                f"argument {extra!r}")
            d.update(kw)
        if len(args) < n_required:  # the required fields come first: those not given by position
            for n in required[len(args):]:
                if n not in kw:
                    raise TypeError(f"{cls_name}() missing argument {n!r}")
        for i, n, f in made:
            if i >= len(args) and n not in kw:
                d[n] = f.make()

    def _values(self) -> tuple:
        d = self.__dict__
        return tuple(d[n] for n in names)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def __repr__(self) -> str:
        d = self.__dict__
        return f"{cls_name}({', '.join(f'{n}={d[n]!r}' for n in names)})"

    cls.__init__ = __init__
    cls.__eq__ = __eq__
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = __repr__
    cls.__record_fields__ = names
    if frozen:
        def __setattr__(self, name, value):
            raise AttributeError(f"cannot assign to field {name!r} of a frozen {cls_name}")

        def __delattr__(self, name):
            raise AttributeError(f"cannot delete field {name!r} of a frozen {cls_name}")

        cls.__setattr__ = __setattr__
        cls.__delattr__ = __delattr__
        cls.__hash__ = lambda self: hash(_values(self))
    else:
        cls.__hash__ = None  # mutable and compared by value: unhashable, as a dataclass is
    return cls


def replace(obj: T, **changes) -> T:
    """A copy of the record with some fields changed (``dataclasses.replace``)."""
    names = obj.__record_fields__
    for n in changes:
        if n not in names:
            raise TypeError(f"{type(obj).__name__} has no field {n!r}")
    d = obj.__dict__
    return type(obj)(**{n: changes[n] if n in changes else d[n] for n in names})
