"""Bad input on every command: exit 2, one line ``bench CMD: error: ...``, nothing written (issue 10 item 5).

Runs ``bench.cli.main`` in-process (no torch start-up per case) from an empty working directory, so a stray
``records.jsonl`` or ``results/`` written anywhere relative would be seen.
"""
import json

import pytest

from bench.cli import main
from bench.runner import RunSpec

TINY = ["--task", "subspace", "--denoiser", "oracle", "--T", "10", "--batch", "4"]

SUITE = """
description = "input checks"
batch = 4
T = 10
seeds = [0]
{top}
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["naive", "look-ahead"]
{grid}
"""


def call(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors exit from parse_args
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_usage_error(rc, err, cmd, needle, cwd, out=None):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith(f"bench {cmd}: error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert list(cwd.iterdir()) == [], "nothing may be written"
    if out is not None:
        assert not out.exists()


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    d = tmp_path / "cwd"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "--seed: must be a non-negative integer"),
    (["--task", "sphere", "--reward", "f1-theta2"], "reward 'f1-theta2' belongs to task 'subspace', not 'sphere'"),
    (["--steps", "11"], "steps must be between 1 and T = 10, got 11"),
    (["--steps", "0"], "steps must be between 1 and T = 10, got 0"),
    (["--eta", "0.5"], "--eta applies to --sampler ddim only"),
    (["--sampler", "ddpm", "--eta", "1"], "--eta applies to --sampler ddim only"),
    (["--sampler", "ddim", "--eta", "1.5"], "DDIM eta must be in [0, 1]"),
    (["--sampler", "ddim", "--eta", "-0.5"], "DDIM eta must be in [0, 1]"),
    (["--param", "delta=0.1", "--param", "delta=0.2"], "--param delta given twice"),
    (["--param", "delta=true"], "bad value for delta: expected a number, got 'true'"),
    (["--param", "delta=1e"], "expected a number"),
    (["--denoiser", "trained", "--network-seed", "-2"], "network_seed must be a non-negative integer, got -2"),
])
def test_run_bad_input(cwd, tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    rc, _, err = call(["run", *TINY, *args, "--out", str(out)], capsys)
    assert_usage_error(rc, err, "run", needle, cwd, out)


def test_run_empty_out_writes_nothing_in_cwd(cwd, capsys):
    rc, _, err = call(["run", *TINY, "--out", ""], capsys)
    assert_usage_error(rc, err, "run", "--out: must not be empty", cwd)


def test_run_good_twins_of_the_bad_inputs_pass(cwd, tmp_path, capsys):
    """The same values inside their ranges run (so the errors above come from the checks, not the fixture)."""
    out = tmp_path / "ok"
    rc, _, err = call(["run", *TINY, "--seed", "0", "--steps", "10", "--sampler", "ddim", "--eta", "0",
                       "--param", "delta=0.1", "--out", str(out)], capsys)
    assert rc == 0, err
    rec = json.loads((out / "records.jsonl").read_text().splitlines()[-1])
    assert rec["spec"]["eta"] == 0.0 and rec["spec"]["steps"] == 10 and rec["hparams"]["delta"] == 0.1


def write_suite(tmp_path, top="", grid=""):
    p = tmp_path / "s.toml"
    p.write_text(SUITE.format(top=top, grid=grid))
    return p


def test_suite_fixture_is_valid(cwd, tmp_path, capsys):
    rc, out, err = call(["suite", str(write_suite(tmp_path)), "--out", str(tmp_path / "o"), "--dry-run"], capsys)
    assert rc == 0, err
    assert "2 runs" in out


@pytest.mark.parametrize("top, grid, args, needle", [
    ("", "", ["--seeds", "-1"], "--seeds expects non-negative integers"),
    ("", "", ["--seeds", "0,-3"], "--seeds expects non-negative integers"),
    ("", "seeds = [-1]", [], "seeds must be non-negative integers, got -1"),
    ("", "seeds = [true]", [], "seeds must be non-negative integers, got True"),
    ("", "", ["--only", "dps"], "--only dps matches no run of suite s (its methods: look-ahead, naive)"),
    ("", "", ["--workers", "0"], "--workers: must be a positive integer"),
    ("", "", ["--threads", "0"], "--threads: must be a positive integer"),
    ("", "[grid.params.dps]\nzeta = [0.1]", [], "[grid.params.dps] in [[grid]] #1 of s.toml: 'dps' is not one of"),
    ("", "[grid.params.naive]\ndelta = true", [], "bad value for delta: expected a number, got True"),
    ("", "[grid.params.naive]\ndelta = [0.1, 0.1]\n[grid.params.look-ahead]\ndelta = 'x'", [],
     "expected a number, got 'x'"),
    ("", "batch = true", [], "batch expects int, got True"),
    ("rounds = 1.5", "", [], "rounds expects int, got 1.5"),
    ("eta = 0.5", "", [], "eta applies to the ddim sampler only"),
    ('sampler = "ddim"\neta = 2', "", [], "DDIM eta must be in [0, 1]"),
    ("steps = 11", "", [], "steps must be between 1 and T = 10, got 11"),
    ("", "network_seed = [-1]", [], "network_seed must be a non-negative integer, got -1"),
])
def test_suite_bad_input(cwd, tmp_path, capsys, top, grid, args, needle):
    out = tmp_path / "o"
    rc, _, err = call(["suite", str(write_suite(tmp_path, top, grid)), "--out", str(out), *args], capsys)
    assert_usage_error(rc, err, "suite", needle, cwd, out)


def test_suite_empty_out(cwd, tmp_path, capsys):
    rc, _, err = call(["suite", str(write_suite(tmp_path)), "--out", ""], capsys)
    assert_usage_error(rc, err, "suite", "--out: must not be empty", cwd)


def test_report_unknown_figure_writes_nothing(cwd, tmp_path, capsys):
    src = tmp_path / "recs"
    rc, _, err = call(["run", *TINY, "--out", str(src)], capsys)
    assert rc == 0, err
    before = sorted(p.name for p in src.iterdir())
    rc, _, err = call(["report", str(src), "--figure", "dno-memroy"], capsys)
    assert_usage_error(rc, err, "report", "unknown figure 'dno-memroy'; did you mean 'dno-memory'", cwd)
    assert sorted(p.name for p in src.iterdir()) == before  # no summary.md, no figures.json
    rc, _, err = call(["report", str(src), "--out", ""], capsys)
    assert_usage_error(rc, err, "report", "--out: must not be empty", cwd)


def test_a_toml_int_and_a_cli_string_give_one_run_id():
    """``delta = 1`` in a suite and ``--param delta=1`` are the same float hyperparameter, hence one run id."""
    assert RunSpec(params={"delta": 1}).run_id == RunSpec(params={"delta": "1"}).run_id \
        == RunSpec(params={"delta": 1.0}).run_id
    assert RunSpec(params={"delta": 2}).run_id != RunSpec(params={"delta": 1}).run_id
