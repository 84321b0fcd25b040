"""Input checks shared by the commands: argparse value types, run-spec checks the runner leaves to the caller,
and typed suite values. Every failure is bad input (exit 2, one line ``bench CMD: error: ...``)."""
from __future__ import annotations

import argparse
import math


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _finite(kind):
    def conv(s):
        v = kind(s)
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {s!r}")
        return v
    return conv


def _int_at_least(lo: int, what: str):
    def conv(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v
    return conv


_positive = _int_at_least(1, "a positive integer")
_nonneg = _int_at_least(0, "a non-negative integer")


def out_dir(s: str) -> str:
    """An output directory argument: never empty (``Path("")`` would silently mean the current directory)."""
    if not s.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return s


def check_spec(spec) -> None:
    """Checks ``runner.build`` leaves to the caller: seed, steps vs T, eta vs sampler, a reward of another task."""
    from tasks import TASKS, get_task

    if int(spec.seed) != spec.seed or isinstance(spec.seed, bool) or spec.seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {spec.seed!r}")
    if spec.steps is not None and not 1 <= spec.steps <= spec.T:
        raise UsageError(f"steps must be between 1 and T = {spec.T}, got {spec.steps}")
    if spec.sampler == "ddpm" and spec.eta != 1.0:
        raise UsageError(f"eta applies to the ddim sampler only (got eta = {spec.eta} with ddpm)")
    if spec.sampler == "ddim" and not 0.0 <= spec.eta <= 1.0:
        raise UsageError(f"DDIM eta must be in [0, 1] (0 deterministic, 1 DDPM-like noise), got {spec.eta}")
    if spec.task in TASKS and spec.reward not in get_task(spec.task, spec.T).rewards:
        owners = [t for t in TASKS if t != spec.task and spec.reward in get_task(t, spec.T).rewards]
        if owners:
            mine = ", ".join(get_task(spec.task, spec.T).rewards)
            raise UsageError(f"reward {spec.reward!r} belongs to task {owners[0]!r}, not {spec.task!r} "
                             f"(rewards of {spec.task}: {mine})")


def typed_field(key: str, v, where: str):
    """A suite value for a RunSpec field, type-checked (no bool for a number); ints become floats where a float
    is expected, so ``eta = 0`` and ``--eta 0`` give one run id."""
    import typing

    from .runner import RunSpec

    hint = typing.get_type_hints(RunSpec)[key]
    allowed = tuple(a for a in (typing.get_args(hint) or (hint,)) if isinstance(a, type))
    if v is None and type(None) in allowed:
        return v
    if float in allowed and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, bool) and bool not in allowed or not isinstance(v, allowed):
        names = " or ".join(a.__name__ for a in allowed if a is not type(None))
        raise UsageError(f"{where}: {key} expects {names}, got {v!r}")
    return v
