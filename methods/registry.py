"""Name -> method class registry with did-you-mean errors and typed parameter parsing."""
from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import fields

from .base import Method

REGISTRY: dict[str, type[Method]] = {}


class UnknownName(KeyError):
    """An unknown task/reward/method/parameter name; the message names the closest valid ones."""

    def __str__(self):
        return self.args[0]


def suggest(kind: str, name: str, valid) -> UnknownName:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return UnknownName(f"unknown {kind} {name!r}; {hint}valid: {', '.join(valid)}")


def add_named(registry: dict, cls: type, base: type, kind: str, fn: str) -> type:
    """Add a ``base`` subclass to ``registry`` under ``cls.name``: the same class again is a no-op, another class
    under a taken name is an error (plugins cannot shadow built-ins). Shared by methods and tasks."""
    if not (isinstance(cls, type) and issubclass(cls, base)) or cls.name == "?":
        raise ValueError(f"{fn}() needs a {base.__name__} subclass with a name, got {cls!r}")
    old = registry.get(cls.name)
    if old is cls:
        return cls
    if old is not None:
        raise ValueError(f"{kind} name {cls.name!r} is already taken by {old.__module__}.{old.__qualname__}")
    registry[cls.name] = cls
    return cls


def register(cls: type[Method]) -> type[Method]:
    """Add a Method subclass under ``cls.name`` (``add_named``)."""
    return add_named(REGISTRY, cls, Method, "method", "register")


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise suggest("method", name, REGISTRY)
    return REGISTRY[name]


def _check_typed(value, base):
    """A value that is already typed (a suite's TOML): no bool for a number (``int(True)`` would pass), an int
    becomes a float where a float is expected (one run id for ``delta = 1`` and ``--param delta=1``)."""
    if value is None or not isinstance(base, type):
        return value
    if base in (int, float) and isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if base is float and isinstance(value, int):
        return float(value)
    if base is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if base in (bool, str) and not isinstance(value, base):
        raise ValueError(f"expected a {'boolean' if base is bool else 'string'}, got {value!r}")
    return value


def _parse(value, typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if not isinstance(value, str):
        optional = typing.get_origin(typ) in (typing.Union, types.UnionType) and len(args) == 1
        return _check_typed(value, args[0] if optional else typ)
    if value.lower() in ("none", "null") and type(None) in typing.get_args(typ):
        return None
    base = args[0] if args else typ
    if base is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    try:
        v = int(value) if base is int else float(value) if base is float else value
    except ValueError:
        raise ValueError(f"expected {'an integer' if base is int else 'a number'}, got {value!r}") from None
    if base is float and not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {value!r}")
    return v


def make_method(name: str, params: dict | None = None) -> Method:
    """Build a method from string or typed parameters; raises UnknownName / ValueError."""
    cls = get_method(name)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    kwargs = {}
    for k, v in (params or {}).items():
        if k not in known:
            raise suggest(f"parameter of method {name!r}", k, known or ["(none)"])
        try:
            kwargs[k] = _parse(v, hints[k])
        except ValueError as e:
            raise ValueError(f"{name}: bad value for {k}: {e}") from None
    return cls(**kwargs)
