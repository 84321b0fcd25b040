"""Plugins: your own methods, rewards and tasks without editing the package.

A plugin is a Python module (``mypkg.guidance``) or a ``.py`` file whose import registers things:

    methods.register(MyMethod)                      # a Method subclass (methods/base.py)
    tasks.register_reward("subspace", my_reward)    # a tasks.Reward, or a factory task -> Reward
    tasks.register_task(MyTask)                     # a Task subclass (tasks/base.py)

Plugins are named with ``--plugin MODULE_OR_FILE`` on any bench command, ``plugins = [...]`` in a suite TOML
(paths relative to the TOML file), the ``GUIDANCE_BENCH_PLUGINS`` environment variable (os.pathsep-separated)
or installed entry points in the groups ``guidance_bench.methods`` / ``guidance_bench.tasks`` (object: a Method /
Task subclass, or a module) and ``guidance_bench.rewards`` (object: a Reward or factory; the entry point's name
up to its first '.' is the task, e.g. ``subspace.quad``; or a module). Every plugin loaded by the driver is put
into ``GUIDANCE_BENCH_PLUGINS``, which spawned pool workers read at start; dask workers get the list with each
run. Loading the same plugin twice is a no-op.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

ENV = "GUIDANCE_BENCH_PLUGINS"
GROUPS = ("guidance_bench.methods", "guidance_bench.rewards", "guidance_bench.tasks")

_loaded: dict[str, object] = {}  # spec key (absolute file path or module name) -> module
_files: dict[str, str] = {}      # spec key or entry point -> source file
_entry_points_done = False


class PluginError(ValueError):
    """A plugin that is missing or fails to import/register; the message names it (exit 2 at the CLI)."""


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _key(spec: str, base: Path | None = None) -> str:
    if is_file_spec(spec):
        p = Path(spec).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        return str(p.resolve())
    return spec


def _import_file(path: Path):
    """Import a .py file under a name fixed by its path (the same in every worker process)."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_guidance_bench_plugin_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and typing.get_type_hints look the module up while it executes
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_plugin(spec: str, base: Path | None = None):
    """Import one plugin (module name or .py path, relative paths against ``base`` or the cwd); idempotent."""
    key = _key(spec, base)
    if key in _loaded:
        return _loaded[key]
    try:
        if is_file_spec(spec):
            if not Path(key).is_file():
                raise FileNotFoundError(f"no such file {key}")
            mod = _import_file(Path(key))
        else:
            mod = importlib.import_module(spec)
    except (Exception, SystemExit) as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name == spec.split(".")[0] and Path(spec + ".py").is_file():
            hint = f" (not on sys.path; give the file instead: --plugin ./{spec}.py)"
        raise PluginError(f"plugin {spec}: {_one_line(e)}{hint}") from None
    _loaded[key] = mod
    if getattr(mod, "__file__", None):
        _files[key] = str(Path(mod.__file__).resolve())
    _export()
    return mod


def load_entry_points() -> None:
    """Load the installed ``guidance_bench.*`` entry points (once per process)."""
    global _entry_points_done
    if _entry_points_done:
        return
    _entry_points_done = True
    from importlib.metadata import entry_points

    for group in GROUPS:
        for ep in entry_points(group=group):
            try:
                _register(group, ep.name, ep.load())
            except (Exception, SystemExit) as e:
                raise PluginError(f"plugin entry point {ep.name} = {ep.value} ({group}): {_one_line(e)}") from None
            mod = sys.modules.get(ep.module)
            if getattr(mod, "__file__", None):
                _files[f"{group}:{ep.name}"] = str(Path(mod.__file__).resolve())


def _register(group: str, name: str, obj) -> None:
    import types

    import methods
    import tasks

    if isinstance(obj, types.ModuleType):
        return  # importing it registered what it has
    if group == "guidance_bench.methods":
        methods.register(obj)
    elif group == "guidance_bench.tasks":
        tasks.register_task(obj)
    else:
        tasks.register_reward(name.split(".", 1)[0], obj)


def load_plugins(specs=(), base: Path | None = None, entry_points: bool = True) -> list:
    """Load every plugin in ``specs`` (plus installed entry points); returns their modules."""
    if entry_points:
        load_entry_points()
    return [load_plugin(s, base) for s in specs or ()]


def env_specs() -> list[str]:
    return [s for s in os.environ.get(ENV, "").split(os.pathsep) if s.strip()]


def load_from_env() -> None:
    """Worker start-up: load what the driver loaded (``GUIDANCE_BENCH_PLUGINS``) and the entry points."""
    load_plugins(env_specs())


def specs() -> list[str]:
    """The loaded plugins as absolute file paths / module names, in load order (what workers must load)."""
    return list(_loaded)


def _export() -> None:
    have = env_specs()
    os.environ[ENV] = os.pathsep.join(have + [k for k in _loaded if k not in have])


def loaded_files() -> list[str]:
    """Source files of every loaded plugin (module or file, entry points included), sorted."""
    return sorted(set(_files.values()))
