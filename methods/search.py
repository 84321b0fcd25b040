"""Hyperparameter search spaces: every method declares one (``Method.search_space``), tuning reads it.

A space maps field names to a dimension: ``LogRange(lo, hi)`` (a positive knob searched log-uniformly,
typically the guidance strength: ``lo`` has no visible effect, ``hi`` leaves the support), ``Range(lo, hi)``
(linear), ``IntRange(lo, hi)`` or ``Choice(values)``. The method's ``strength`` field, when it has one, must be
a ``LogRange``; the other entries are secondary knobs worth tuning. ``check_space`` validates a class's space
against its fields (the contract suite runs it on every registered method).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["LogRange", "Range", "IntRange", "Choice", "check_space", "unit_to_value"]


@dataclass(frozen=True)
class LogRange:
    lo: float
    hi: float

    def at(self, u: float) -> float:
        """The value at position u in [0, 1] on the log scale."""
        return float(math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo))))

    def pos(self, v: float) -> float:
        return (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))

    def __str__(self):
        return f"log[{self.lo:g}, {self.hi:g}]"


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float

    def at(self, u: float) -> float:
        return float(self.lo + u * (self.hi - self.lo))

    def pos(self, v: float) -> float:
        return (v - self.lo) / (self.hi - self.lo)

    def __str__(self):
        return f"[{self.lo:g}, {self.hi:g}]"


@dataclass(frozen=True)
class IntRange:
    lo: int
    hi: int

    def at(self, u: float) -> int:
        return int(min(self.hi, self.lo + math.floor(u * (self.hi - self.lo + 1))))

    def pos(self, v: float) -> float:
        return (v - self.lo + 0.5) / (self.hi - self.lo + 1)

    def __str__(self):
        return f"int[{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class Choice:
    values: tuple

    def at(self, u: float) -> Any:
        return self.values[min(len(self.values) - 1, int(u * len(self.values)))]

    def pos(self, v) -> float:
        return (self.values.index(v) + 0.5) / len(self.values)

    def __str__(self):
        return "{" + ", ".join(str(v) for v in self.values) + "}"


def unit_to_value(dim, u: float):
    """Map u in [0, 1] to a value of the dimension (the search algorithm works in the unit cube)."""
    return dim.at(min(1.0, max(0.0, float(u))))


def check_space(cls) -> list[str]:
    """Problems with ``cls.search_space`` (empty list = valid): declared, names real fields, lo < hi, LogRange
    positive, the strength is a LogRange, both ends (and every choice) are accepted by the method."""
    space = getattr(cls, "search_space", None)
    name = getattr(cls, "name", cls.__name__)
    if not isinstance(space, dict):
        return [f"{name}: search_space must be a dict of field -> dimension, got {type(space).__name__}"]
    errs = []
    strength = getattr(cls, "strength", None)
    if strength is not None and not isinstance(space.get(strength), LogRange):
        errs.append(f"{name}: the strength {strength!r} must be in search_space as a LogRange")
    names = {f.name for f in fields(cls)}
    for k, dim in space.items():
        if k not in names:
            errs.append(f"{name}: search_space names {k!r}, not a field (fields: {', '.join(sorted(names))})")
            continue
        if isinstance(dim, (LogRange, Range, IntRange)):
            if not dim.lo < dim.hi:
                errs.append(f"{name}: search_space[{k!r}] needs lo < hi, got {dim}")
            if isinstance(dim, LogRange) and not dim.lo > 0:
                errs.append(f"{name}: search_space[{k!r}] is a LogRange and needs lo > 0, got {dim}")
            probes = [dim.lo, dim.hi]
        elif isinstance(dim, Choice):
            if len(dim.values) < 2:
                errs.append(f"{name}: search_space[{k!r}] needs at least two choices")
            probes = list(dim.values)
        else:
            errs.append(f"{name}: search_space[{k!r}] must be LogRange/Range/IntRange/Choice, got {dim!r}")
            continue
        for v in probes:
            try:
                cls(**{k: v})
            except (TypeError, ValueError) as e:
                errs.append(f"{name}: search_space[{k!r}] value {v!r} is rejected by the method: {e}")
    return errs


def describe(space: dict) -> str:
    """One line for `bench list`: ``delta log[0.01, 10], sigma [0, 1]``."""
    return ", ".join(f"{k} {v}" for k, v in space.items()) or "(nothing to tune)"
