"""Plugins (bench/plugins.py): a method, reward or task from outside the package, on every command and in workers.

The example plugin's method also goes through every check of the shared contract suite (tests/test_contract.py),
enumerated from that module, so a check added there applies to plugin methods too.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import test_contract as contract

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plugin_example.py"
SUITE = ROOT / "examples" / "plugin_suite.toml"


@contextlib.contextmanager
def isolated():
    """Undo every registration a test makes (registry, tasks, rewards on live instances, loaded plugins, env)."""
    import methods
    import tasks
    from bench import plugins

    saved = (dict(methods.REGISTRY), dict(tasks.TASKS), {k: dict(v) for k, v in tasks.EXTRA_REWARDS.items()},
             dict(plugins._loaded), dict(plugins._files), plugins._entry_points_done, os.environ.get(plugins.ENV))
    live = {k: dict(t.rewards) for k, t in tasks._LIVE.items()}
    try:
        yield
    finally:
        for cur, old in zip((methods.REGISTRY, tasks.TASKS, tasks.EXTRA_REWARDS, plugins._loaded, plugins._files),
                            saved):
            cur.clear()
            cur.update(old)
        plugins._entry_points_done = saved[5]
        os.environ.pop(plugins.ENV, None)
        if saved[6] is not None:
            os.environ[plugins.ENV] = saved[6]
        for k, t in list(tasks._LIVE.items()):
            if k in live:
                t.rewards.clear()
                t.rewards.update(live[k])
        tasks.get_task.cache_clear()


@pytest.fixture(scope="module")
def example():
    """The example plugin loaded in-process; yields the method names it added."""
    from methods import REGISTRY

    with isolated():
        from bench.plugins import load_plugins

        before = set(REGISTRY)
        load_plugins([str(EXAMPLE)], entry_points=False)
        yield sorted(set(REGISTRY) - before)


@pytest.fixture
def clean():
    with isolated():
        yield


def bench(*args, cwd=ROOT, env=None):
    e = {k: v for k, v in os.environ.items() if k != "GUIDANCE_BENCH_PLUGINS"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**e, **(env or {})})


# --- the example plugin's method through the shared contract suite ---------------------------------------------
def _contract_cases(fn, names, request):
    """Every parameter combination the contract suite gives ``fn``, with ``name`` set to each plugin method."""
    grids = []
    for m in getattr(fn, "pytestmark", []):
        if m.name == "parametrize" and m.args[0] != "name":
            keys = [k.strip() for k in m.args[0].split(",")]
            grids.append([dict(zip(keys, v if len(keys) > 1 else (v,))) for v in m.args[1]])
    wanted = inspect.signature(fn).parameters
    for name in names:
        for combo in itertools.product(*grids):
            kw = {"name": name}
            for d in combo:
                kw.update(d)
            kw.update({k: request.getfixturevalue(k) for k in wanted if k not in kw})
            yield kw


@pytest.mark.parametrize("check", sorted(n for n in vars(contract) if n.startswith("test_")))
def test_example_method_passes_the_contract_suite(check, example, request):
    assert example == ["unit-dps"]
    fn = getattr(contract, check)
    cases = list(_contract_cases(fn, example, request))
    assert cases
    for kw in cases:
        fn(**kw)


def test_example_reward_on_live_and_new_task_instances(example, small_T_tasks):
    from tasks import get_task

    live = small_T_tasks["subspace"]  # handed out before the plugin loaded
    for task in (live, get_task("subspace", 33)):
        r = task.reward("quad-theta1")
        c = 3 * task.theta["theta1"] / task.theta["theta1"].norm()
        x = torch.stack([c, torch.zeros(64), c + 8])  # r = -|x - c|^2 / 64: 0, -9/64, -64 * 64 / 64
        torch.testing.assert_close(r(x), torch.tensor([0.0, -9 / 64, -64.0]))
    assert "quad-theta1" not in get_task("sphere", 20).rewards


def test_loading_twice_is_a_no_op_and_name_clashes_are_errors(clean, tmp_path):
    import methods
    from bench.plugins import PluginError, load_plugins, loaded_files

    (a,) = load_plugins([str(EXAMPLE)], entry_points=False)
    n = len(methods.REGISTRY)
    (b,) = load_plugins([os.path.relpath(EXAMPLE)], entry_points=False)
    assert a is b and len(methods.REGISTRY) == n
    methods.register(a.UnitDPS)  # the same object again
    assert loaded_files() == [str(EXAMPLE)]
    assert os.environ["GUIDANCE_BENCH_PLUGINS"].split(os.pathsep) == [str(EXAMPLE)]
    clash = tmp_path / "clash.py"
    clash.write_text("import methods\nfrom methods.unguided import Unguided\n\n"
                     "class Mine(Unguided):\n    name = 'dps'\n\nmethods.register(Mine)\n")
    with pytest.raises(PluginError, match=r"plugin .*clash.py: ValueError: method name 'dps' is already taken by "
                                          r"methods.dps.DPS"):
        load_plugins([str(clash)], entry_points=False)
    assert methods.REGISTRY["dps"].__module__ == "methods.dps"


def test_plugin_sources_are_part_of_the_code_fingerprint(clean, tmp_path):
    from bench.plugins import load_plugins, loaded_files
    from bench.records import code_fingerprint

    before = code_fingerprint()
    (tmp_path / "empty_plugin.py").write_text("VALUE = 1\n")
    load_plugins([str(tmp_path / "empty_plugin.py")], entry_points=False)
    assert str(tmp_path / "empty_plugin.py") in loaded_files()
    assert code_fingerprint() != before


def test_a_plugin_task_named_in_a_suite_file(clean, tmp_path):
    from bench.suite import expand, load_suite

    (tmp_path / "mini.py").write_text(textwrap.dedent("""
        import tasks
        from tasks.subspace import Subspace

        class Mini(Subspace):
            name = "mini-subspace"
            summary = "the subspace task under another name"

        tasks.register_task(Mini)
        tasks.register_task(Mini)
    """))
    (tmp_path / "s.toml").write_text('plugins = ["mini.py"]\nT = 10\n[[grid]]\ntasks = ["mini-subspace"]\n'
                                     'methods = ["unguided"]\n')
    specs = expand(load_suite(tmp_path / "s.toml"))
    assert [(s.task, s.reward, s.method) for s in specs] == [("mini-subspace", "f1-theta2", "unguided")]


def test_entry_points_register_methods_and_rewards(clean, tmp_path, monkeypatch):
    import methods
    from bench import plugins
    from tasks import get_task

    (tmp_path / "ep_mod.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from methods.unguided import Unguided
        from tasks import Reward

        @dataclass(frozen=True)
        class Plain(Unguided):
            name = "ep-plain"

        neg = Reward("neg-sum", lambda x: -x.sum(1), "-sum(x)")
    """))
    dist = tmp_path / "ep_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[guidance_bench.methods]\nplain = ep_mod:Plain\n\n"
                                           "[guidance_bench.rewards]\nsphere.neg = ep_mod:neg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._entry_points_done = False
    plugins.load_plugins([])
    assert methods.REGISTRY["ep-plain"].__module__ == "ep_mod"
    assert get_task("sphere", 20).reward("neg-sum")(torch.ones(2, 3)).tolist() == [-3.0, -3.0]
    assert str(tmp_path / "ep_mod.py") in plugins.loaded_files()


def test_missing_or_broken_plugin_is_exit_2_one_line(clean, tmp_path, capsys):
    from bench.cli import main

    assert main(["list", "--plugin", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bench list: error: plugin {tmp_path / 'nope.py'}: ")
    assert main(["--plugin", "no_such_plugin_module", "list"]) == 2
    assert "plugin no_such_plugin_module: ModuleNotFoundError" in capsys.readouterr().err
    (tmp_path / "broken.py").write_text("import methods\nraise RuntimeError('boom\\nsecond line')\n")
    (tmp_path / "s.toml").write_text('plugins = ["broken.py"]\n[[grid]]\ntasks = ["subspace"]\nmethods = ["dps"]\n')
    out = tmp_path / "out"
    assert main(["suite", str(tmp_path / "s.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"bench suite: error: plugin broken.py: RuntimeError: boom second line\n"
    assert not out.exists()


# --- through the command line, in spawned workers -----------------------------------------------------------------
def test_bench_list_shows_the_plugin():
    r = bench("list", "--plugin", "examples/plugin_example.py")
    assert r.returncode == 0, r.stderr
    assert "unit-dps v1: DPS with a fixed step length" in r.stdout and "reward quad-theta1:" in r.stdout


VALUES = ("run_id", "round", "method", "hparams", "reward_fn", "reward_mean", "reward_se", "off_support_mean",
          "nfe", "vjp", "status")


def test_example_suite_serial_and_two_workers_agree(clean, tmp_path):
    """Serial in this process, then a fresh `bench suite --workers 2` whose spawned workers load the plugin."""
    from bench.cli import main

    got = {}
    for name in ("serial", "pool"):
        out = tmp_path / name
        if name == "serial":
            assert main(["suite", str(SUITE), "--out", str(out), "--no-report"]) == 0
        else:
            r = bench("suite", str(SUITE), "--out", str(out), "--no-report", "--workers", "2")
            assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        got[name] = sorted(([r[k] for k in VALUES] for r in rows), key=str)
    assert got["serial"] == got["pool"]
    rows = got["serial"]
    assert len(rows) == 16 and all(r[-1] == "ok" for r in rows)  # 8 runs x rounds 0, 1
    assert {(r[2], r[4]) for r in rows} >= {("unit-dps", "quad-theta1"), ("look-ahead", "quad-theta1")}


def test_dask_workers_load_the_plugin(example):
    pytest.importorskip("dask.distributed")
    from bench.executors import SerialExecutor, make_executor, run_all
    from bench.runner import RunSpec

    spec = [RunSpec(task="subspace", reward="quad-theta1", method="unit-dps", rounds=1, batch=4, T=10)]
    want = [[r["reward_mean"] for r in recs] for recs in run_all(spec, executor=SerialExecutor())]
    got = [[r["reward_mean"] for r in recs] for recs in run_all(spec, executor=make_executor("dask", workers=1))]
    assert got == want and len(want[0]) == 2
