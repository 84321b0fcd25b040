"""Benchmark tasks: data + denoisers (oracle, trained) + rewards + off-support error."""
from __future__ import annotations

from functools import lru_cache

from methods.registry import suggest

from .base import DENOISER_KINDS, NetDenoiser, Reward, Task  # noqa: F401
from .sphere import Sphere
from .subspace import Subspace
from .digits import Digits, Digits16

TASKS: dict[str, type[Task]] = {"subspace": Subspace, "sphere": Sphere, "digits": Digits, "digits16": Digits16}


@lru_cache(maxsize=16)
def get_task(name: str, T: int = 200) -> Task:
    if name not in TASKS:
        raise suggest("task", name, TASKS)
    return TASKS[name](T=T)
