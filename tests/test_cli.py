"""CLI smoke runs on tiny configs and bad-input handling (exit 2, one line, nothing written)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


TINY = ["--task", "subspace", "--denoiser", "oracle", "--T", "10", "--batch", "4"]


def test_run_writes_one_record_per_round(tmp_path):
    r = bench("run", *TINY, "--method", "look-ahead", "--param", "delta=0.5", "--rounds", "3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [x["round"] for x in recs] == [0, 1, 2, 3]
    required = {"run_id", "task", "task_version", "reward_fn", "denoiser", "method", "method_version", "hparams",
                "protocol", "round", "seed", "n", "reward_mean", "reward_se", "reward_topk", "off_support_mean",
                "off_support_se", "metrics", "nfe", "vjp", "reward_calls", "wall_s", "peak_mem_mb", "device",
                "status", "error", "git", "dirty", "date", "torch"}
    assert required <= set(recs[0])
    assert recs[-1]["hparams"]["delta"] == 0.5 and recs[-1]["protocol"] == "alg1"
    assert [x["nfe"] for x in recs] == [10, 20, 30, 40] and recs[-1]["vjp"] == 30
    assert recs[-1]["reward_calls"] == 3  # one batched gradient query per guided round
    assert all(x["status"] == "ok" for x in recs)


def test_report_writes_table_and_plots(tmp_path):
    for m in ("naive", "look-ahead"):
        assert bench("run", *TINY, "--method", m, "--rounds", "2", "--out", str(tmp_path)).returncode == 0
    r = bench("report", str(tmp_path))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "summary.md").read_text()
    assert "look-ahead" in md and "naive" in md and "reward ↑" in md
    assert list(tmp_path.glob("*reward_mean_vs_round.png")) and list(tmp_path.glob("*off_support_mean_vs_round.png"))


def test_list_shows_methods_parameters_and_tasks():
    r = bench("list")
    assert r.returncode == 0
    for word in ("subspace", "sphere", "f1-theta2", "look-ahead", "naive", "delta", "oracle", "trained"):
        assert word in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--task", "subspce"], "did you mean 'subspace'"),
    (["--reward", "f1-theta3"], "did you mean"),
    (["--method", "lookahead"], "did you mean 'look-ahead'"),
    (["--param", "detla=0.2"], "did you mean 'delta'"),
    (["--denoiser", "orcale"], "did you mean 'oracle'"),
    (["--batch", "0"], "batch must be"),
    (["--T", "1"], "T must be"),
    (["--rounds", "-1"], "rounds must be"),
    (["--param", "delta=-0.1"], "delta must be >= 0"),
    (["--param", "delta=nan"], "finite"),
    (["--eta", "nan"], "finite"),
    (["--param", "delta"], "NAME=VALUE"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    r = bench("run", *TINY, *args, "--out", str(out))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert needle in r.stderr, r.stderr
    assert len(lines) == 1
    assert not out.exists()


def test_algorithm2_with_oracle_is_rejected(tmp_path):
    r = bench("run", *TINY, "--algorithm", "2", "--rounds", "3", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "trained" in r.stderr and not (tmp_path / "o").exists()


def test_cuda_request_without_cuda_is_clear(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = bench("run", *TINY, "--device", "cuda", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "cuda" in r.stderr and not (tmp_path / "o").exists()
