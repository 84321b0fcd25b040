"""mnist-table on hand-made records (no networks): the hacking view is the digits report's (hacking_rows) on the
mean over report seeds, whose SE shrinks with the number of seeds."""
from __future__ import annotations

from bench.figures_mnist import mnist_table
from bench.report_tables import frame


def rec(run_id, method, seed, reward, heldout, se=0.1, h_se=0.1):
    m = {"heldout_reward": heldout, "heldout_reward_se": h_se, "guide_heldout_cov": 0.0, "hack_ref": 0.85,
         "hack_ref_lo": 0.80, "hack_ref_hi": 0.90, "fid": 5.0, "fid_floor": 2.0}
    return {"run_id": run_id, "task": "mnist", "reward_fn": "synthetic", "denoiser": "trained", "method": method,
            "hparams": {}, "spec": {"rounds": 1}, "protocol": "one-shot", "round": 1, "reward_mean": reward,
            "reward_se": se, "off_support_mean": 1.0, "nfe": 20, "vjp": 0, "metrics": m, "status": "ok",
            "seed": seed, "n": 32}


def _hacking_cells(items):
    text = next(t for title, t in items if "hacking" in title)
    lines = [ln for ln in text.splitlines() if ln.startswith("| naive")]
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_mnist_hacking_rows_on_the_seed_mean(tmp_path):
    one = [rec("u0", "unguided", 0, 0.0, 0.0), rec("n0", "naive", 0, 1.0, 0.5)]
    two = one + [rec("u1", "unguided", 1, 0.0, 0.0), rec("n1", "naive", 1, 1.0, 0.5)]
    # one seed: var_g = var_h = 0.02, R = 0.5 -> SE = sqrt(0.02 + 0.25 * 0.02) = 0.158 (digits report's answer)
    cells = _hacking_cells(mnist_table(frame(one), tmp_path))
    assert cells[:6] == ["naive [one-shot]", "1 (7.1)", "0.5", "0.50 [0.19, 0.81]", "0.85 [0.80, 0.90]", "no"]
    # two seeds: each mean's SE is 0.1 / sqrt(2) -> SE of R = 0.112, z = 10; the interval now lies below 0.80
    cells = _hacking_cells(mnist_table(frame(two), tmp_path))
    assert cells[:6] == ["naive [one-shot]", "1 (10.0)", "0.5", "0.50 [0.28, 0.72]", "0.85 [0.80, 0.90]", "yes"]
