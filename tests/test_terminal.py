"""Friendly at the terminal (issue 10 item 6): ``bench list`` (suites, allowed values, --json), defaults in
``--help``, progress lines without a TTY, ``--threads``."""
import argparse
import io
import json
import re
import time
import tomllib

import pytest
import torch

from bench.cli import main, make_parser
from bench.progress import Progress
from bench.suite import SUITES_DIR

TINY = ["--task", "subspace", "--denoiser", "oracle", "--T", "10", "--batch", "4"]
LINE = re.compile(r"^\[bench\] (.+): (\d+)/(\d+) (\w+)s done(, (\d+) failed)?, (\d+) s elapsed(, ~\d+ s left)?")


def call(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --- bench list -------------------------------------------------------------------------------------------------
def test_list_shows_suites_and_allowed_values(capsys):
    rc, out, _ = call(["list"], capsys)
    assert rc == 0
    for f in SUITES_DIR.glob("*.toml"):  # every shipped suite with the description from its file
        desc = tomllib.loads(f.read_text())["description"]
        assert f"  {f.stem}: {desc}" in out.splitlines()
    step_rule = next(ln for ln in out.splitlines() if ln.strip().startswith("step_rule ="))
    assert "[one of: constant, rms]" in step_rule  # methods/mpgd.py declares the choices
    optimizer = next(ln for ln in out.splitlines() if ln.strip().startswith("optimizer ="))
    assert "[one of: adamw, adam, sgd]" in optimizer


def test_list_json_matches_the_registries(capsys):
    from dataclasses import fields

    from methods import REGISTRY
    from tasks import TASKS

    rc, out, _ = call(["list", "--json"], capsys)
    assert rc == 0
    d = json.loads(out)
    assert set(d["tasks"]) == set(TASKS) and set(d["methods"]) == set(REGISTRY)
    assert set(d["suites"]) == {f.stem for f in SUITES_DIR.glob("*.toml")}
    for name, cls in REGISTRY.items():
        got = {p["name"]: p["choices"] for p in d["methods"][name]["params"]}
        want = {f.name: list(f.metadata["choices"]) if f.metadata.get("choices") else None for f in fields(cls)}
        assert got == want, name
    assert "f1-theta2" in d["tasks"]["subspace"]["rewards"]
    assert {p["name"]: p["default"] for p in d["methods"]["look-ahead"]["params"]}["delta"] \
        == REGISTRY["look-ahead"]().delta


def test_every_choice_parameter_rejects_values_outside_its_list():
    from methods import make_method

    from dataclasses import fields

    from methods import REGISTRY

    n = 0
    for name, cls in REGISTRY.items():
        for f in fields(cls):
            if f.metadata.get("choices"):
                n += 1
                with pytest.raises(ValueError, match="must be one of"):
                    make_method(name, {f.name: "not-a-choice"})
    assert n >= 5


# --- --help -----------------------------------------------------------------------------------------------------
def _subparsers(p):
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("cmd", sorted(_subparsers(make_parser())))
def test_help_shows_every_default(cmd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping (argparse breaks lines at hyphens too)
    sp = _subparsers(make_parser())[cmd]
    text = " ".join(sp.format_help().split())
    for a in sp._actions:
        if not a.option_strings or a.help in (None, argparse.SUPPRESS) or a.default is None or a.default is False \
                or a.default == [] or a.default is argparse.SUPPRESS:
            continue
        assert f"(default: {a.default})" in text or "default" in a.help, f"bench {cmd} {a.option_strings[0]}"
    if cmd == "run":
        assert "--T T diffusion steps of the schedule (>= 2) (default: 200)" in text
    if cmd == "suite":
        assert re.search(r"--threads THREADS torch CPU threads [^-]*\(default: 1\)", text)


def test_every_option_with_a_default_has_help():
    missing = [f"bench {cmd} {a.option_strings[0]}" for cmd, sp in _subparsers(make_parser()).items()
               for a in sp._actions
               if a.option_strings and not a.help and not (a.default is None or a.default is False
                                                           or a.default == [] or a.default is argparse.SUPPRESS)]
    assert missing == [], "no help text, so --help cannot show the default"


# --- progress ---------------------------------------------------------------------------------------------------
def test_plain_lines_every_tenth_without_a_tty():
    f = io.StringIO()
    p = Progress(20, "runs", "run", file=f, every_s=1e9)
    for i in range(20):
        p.update(1, failed=1 if i >= 5 else 0)
    p.close()
    lines = f.getvalue().splitlines()
    got = [LINE.match(ln) for ln in lines]
    assert all(got), lines
    assert [int(m.group(2)) for m in got] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # every 10 %, last at close
    assert got[0].group(6) is None and got[-1].group(6) == "1"
    assert "s left" in lines[0] and "s left" not in lines[-1]


def test_plain_lines_keep_coming_while_nothing_finishes():
    f = io.StringIO()
    with Progress(5, "runs", "run", file=f, every_s=0.2):
        time.sleep(1.0)
    lines = f.getvalue().splitlines()
    assert len(lines) >= 2 and all(LINE.match(ln).group(2) == "0" for ln in lines)


def test_a_tty_gets_the_bar_not_lines():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    f = Tty()
    with Progress(3, "runs", "run", file=f, every_s=0.01) as p:
        p.update(3)
    assert "[bench]" not in f.getvalue() and "3/3" in f.getvalue()
    f = io.StringIO()
    with Progress(3, "runs", "run", file=f, enabled=False) as p:
        p.update(3)
    assert f.getvalue() == ""


def test_suite_and_run_print_progress_lines_without_a_tty(tmp_path, capsys, keep_threads):
    suite = tmp_path / "s.toml"
    suite.write_text('description = "t"\nbatch = 4\nT = 10\nseeds = [0, 1, 2]\n'
                     '[[grid]]\ntasks = ["subspace"]\ndenoisers = ["oracle"]\nmethods = ["naive"]\n')
    rc, _, err = call(["suite", str(suite), "--out", str(tmp_path / "o"), "--no-report", "--threads", "2"], capsys)
    assert rc == 0, err
    lines = [m for m in map(LINE.match, err.splitlines()) if m]
    assert [int(m.group(2)) for m in lines] == [1, 2, 3] and lines[0].group(4) == "run"
    assert torch.get_num_threads() == 2  # --threads reached the (serial) driver
    rc, _, err = call(["run", *TINY, "--rounds", "2", "--out", str(tmp_path / "r")], capsys)
    assert rc == 0, err
    assert "[bench] look-ahead on subspace/oracle: 3/3 rounds done" in err


def test_pretrain_prints_step_lines_and_takes_threads(tmp_path, monkeypatch, capsys, keep_threads):
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    rc, out, err = call(["pretrain", "--task", "subspace", "--T", "10", "--train-steps", "30", "--threads", "3"],
                        capsys)
    assert rc == 0, err
    lines = [m for m in map(LINE.match, err.splitlines()) if m]
    assert [int(m.group(2)) for m in lines] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert lines[0].group(4) == "step" and "loss=" in err
    assert torch.get_num_threads() == 3
    assert list((tmp_path / "cache").glob("subspace-*.pt"))


def test_process_workers_run_with_the_requested_threads():
    from bench.executors import ProcessExecutor, run_all
    from bench.runner import RunSpec

    spec = RunSpec(method="naive", rounds=0, batch=2, T=10)
    (recs,) = run_all([spec], executor=ProcessExecutor(workers=1, threads=2))
    assert recs[0]["provenance"]["threads"] == 2
