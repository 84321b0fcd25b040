"""Benchmark tasks: data + denoisers (oracle, trained) + rewards + off-support error.

Plugins add tasks with ``register_task`` and rewards on any task with ``register_reward`` (bench/plugins.py).
"""
from __future__ import annotations

import weakref
from functools import lru_cache
from typing import Callable

from methods.registry import add_named, suggest

from .base import DENOISER_KINDS, NetDenoiser, Reward, Task  # noqa: F401
from .sphere import Sphere
from .subspace import Subspace
from .digits import Digits, Digits16
from .mnist import Mnist

TASKS: dict[str, type[Task]] = {"subspace": Subspace, "sphere": Sphere, "digits": Digits, "digits16": Digits16,
                               "mnist": Mnist}
EXTRA_REWARDS: dict[str, dict[str, Reward | Callable[[Task], Reward]]] = {}  # task -> reward name -> entry
_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # (name, T) -> every instance handed out


def _build_reward(entry, task: Task) -> Reward:
    r = entry if isinstance(entry, Reward) else entry(task)
    if not isinstance(r, Reward):
        raise ValueError(f"a reward factory must return tasks.Reward, got {type(r).__name__}")
    return r


@lru_cache(maxsize=16)
def get_task(name: str, T: int = 200) -> Task:
    if name not in TASKS:
        raise suggest("task", name, TASKS)
    task = TASKS[name](T=T)
    for rname, entry in EXTRA_REWARDS.get(name, {}).items():
        task.rewards[rname] = _build_reward(entry, task)
    _LIVE[(name, T)] = task
    return task


def register_task(cls: type[Task]) -> type[Task]:
    """Add a Task subclass under ``cls.name``; the same class again is a no-op, a taken name an error."""
    return add_named(TASKS, cls, Task, "task", "register_task")


def register_reward(task_name: str, reward: Reward | Callable[[Task], Reward]) -> Reward | Callable:
    """Add a reward to a registered task: a ``Reward``, or a factory ``task -> Reward`` (for rewards built
    from the task's constants). Applies to task instances already handed out by ``get_task`` and to every
    later one. The same object again is a no-op; a name the task already has is an error."""
    if task_name not in TASKS:
        raise suggest("task", task_name, TASKS)
    extra = EXTRA_REWARDS.setdefault(task_name, {})
    if any(e is reward for e in extra.values()):
        return reward
    probe = get_task(task_name)
    r = _build_reward(reward, probe)
    if r.name in probe.rewards:
        kind = "a plugin" if r.name in extra else "a built-in"
        raise ValueError(f"reward name {r.name!r} of task {task_name!r} is already taken by {kind} reward")
    extra[r.name] = reward
    for (name, _), task in list(_LIVE.items()):
        if name == task_name:
            task.rewards[r.name] = r if task is probe else _build_reward(reward, task)
    return reward
