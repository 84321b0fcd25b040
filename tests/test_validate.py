"""bench validate: the exact oracle passes when it is dressed as a network; damaged weights fail loudly."""
import json

import pytest
import torch

from bench.validate import validate
from tasks import get_task, pretrain
from tasks.base import NetDenoiser


class OracleNet(torch.nn.Module):
    """The oracle as an eps-network with weights: eps*(x, t) + W x, W = 0 until damaged."""

    def __init__(self, task):
        super().__init__()
        self.oracle = task.oracle("cpu")
        self.W = torch.nn.Linear(64, 64, bias=False)
        torch.nn.init.zeros_(self.W.weight)

    def forward(self, x, t):
        return self.oracle.eps(x, t) + self.W(x)


def _den(task, damage: float = 0.0):
    net = OracleNet(task)
    with torch.no_grad():
        net.W.weight.add_(damage * torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))
    for p in net.parameters():
        p.requires_grad_(False)
    return NetDenoiser(net, task.schedule, task.shape)


@pytest.mark.parametrize("name", ["sphere", "subspace"])
def test_oracle_as_network_passes_and_damaged_weights_fail(name):
    task = get_task(name, 200)
    ok = validate(task, _den(task), batch=64, steps=12)
    assert ok["passed"] and all(c["ok"] for c in ok["checks"])
    assert {r["t"] for r in ok["rows"]} >= {0, 199}  # the sampler grid, both ends
    for c in ok["checks"]:
        assert c["worst"] <= c["limit"] / 10  # float32 round-off only: far inside every limit
    bad = validate(task, _den(task, damage=0.05), batch=64, steps=12)
    assert not bad["passed"]
    failed = {c["metric"] for c in bad["checks"] if not c["ok"]}
    assert "eps_rel_mse" in failed
    # the Jacobian checks see the damage too (directions guidance differentiates)
    assert failed & {"leak", "radial_slope_err", "vjp_rel_err"}


def test_oracle_reference_values_match_the_closed_form():
    """The sphere's oracle radial slope at t = 0 / 1 / 3 (issue 12: 0.008 / 0.019 / 0.048)."""
    from bench.validate import measure_t

    task = get_task("sphere", 200)
    x0, gen = task.sample_data(256, torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1)
    slope = {t: measure_t(task, _den(task), task.oracle("cpu"), task.reward("linear"), x0, t, gen)
             ["radial_slope_oracle"] for t in (0, 1, 3)}
    assert slope[0] == pytest.approx(0.0079, abs=5e-4)
    assert slope[1] == pytest.approx(0.0189, abs=1e-3)
    assert slope[3] == pytest.approx(0.0475, abs=2e-3)


def test_cli_fails_loudly_on_a_barely_trained_network(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path / "cache"))
    for k, v in {"steps": 3, "n_train": 128, "batch": 16}.items():
        monkeypatch.setitem(pretrain.TRAIN_DEFAULTS, k, v)
    out = tmp_path / "v"
    code = main(["validate", "--task", "sphere", "--steps", "6", "--batch", "16", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "VALIDATION FAILED: sphere/trained" in err
    res = json.loads((out / "validate.json").read_text())
    assert res["passed"] is False and len(res["checkpoint"]) == 16
    assert "**FAIL**" in (out / "validate.md").read_text()


@pytest.mark.parametrize("argv, msg", [
    (["--task", "digits"], "has no exact oracle"),
    (["--task", "sphere", "--denoiser", "oracle"], "choose a trained denoiser"),
    (["--task", "sphere", "--reward", "nope"], "reward"),
    (["--task", "sphere", "--batch", "1"], "--batch"),
])
def test_cli_bad_input_is_exit_2(argv, msg, tmp_path, capsys):
    from bench.cli import main

    assert main(["validate", *argv, "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench validate: error:") and msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "v").exists()
