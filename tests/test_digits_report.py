"""Digits report figures on hand-made records (no networks): the calibrated reward-hacking table (issue 12: a ratio
with its interval only where the guider gain is significant, beside the real-image reference) and the Algorithm 1
fresh-vs-reused-noise table."""
from __future__ import annotations

import pytest

from bench.figures_digits import digits_noise, hacking_rows, _final
from bench.report_tables import frame


def rec(run_id, method, rnd, reward, se, heldout, h_se, cov=0.0, protocol="one-shot", rounds=1, **extra):
    m = {"heldout_reward": heldout, "heldout_reward_se": h_se, "guide_heldout_cov": cov, "hack_ref": 0.85,
         "hack_ref_lo": 0.80, "hack_ref_hi": 0.90, **extra}
    return {"run_id": run_id, "task": "digits", "reward_fn": "class-3", "denoiser": "trained", "method": method,
            "hparams": {}, "spec": {"rounds": rounds}, "protocol": protocol, "round": rnd, "reward_mean": reward,
            "reward_se": se, "metrics": m, "status": "ok", "seed": 0, "n": 128}


def test_hacking_rows_known_answers():
    recs = [rec("u", "unguided", 1, 0.0, 0.1, 0.0, 0.1, cov=0.005),
            rec("a", "naive", 1, 1.0, 0.1, 0.5, 0.1, cov=-0.005),  # z = 7.1; R = 0.5, covs cancel: SE 0.158
            rec("b", "dps", 1, 0.1, 0.1, 0.5, 0.1),     # z = 0.71: no ratio reported
            rec("c", "mpgd", 1, 2.0, 0.1, 0.2, 0.1, cov=0.005)]  # R = 0.1
    rows = {r["method [protocol]"].split()[0]: r for r in hacking_rows(_final(frame(recs)))}
    assert rows["naive"]["ratio [95 %]"] == "0.50 [0.19, 0.81]" and rows["naive"]["below"] == "no"
    assert rows["naive"]["guider gain (z)"] == "1 (7.1)"
    assert rows["dps"]["ratio [95 %]"] == "" and rows["dps"]["below"] == ""
    se = (0.02 - 2 * 0.1 * 0.01 + 0.01 * 0.02) ** 0.5 / 2  # covariances of both batches add
    assert rows["mpgd"]["ratio [95 %]"] == f"0.10 [{0.1 - 1.96 * se:.2f}, {0.1 + 1.96 * se:.2f}]"
    assert rows["mpgd"]["below"] == "yes" and rows["mpgd"]["reference [95 %]"] == "0.85 [0.80, 0.90]"


def test_digits_noise_table_fresh_vs_reused(tmp_path):
    recs = []
    for rid, proto, vals in (("f", "alg1", (-19.3, -21.0, -23.0)), ("r", "alg1-reuse", (-19.3, -15.0, -11.3))):
        recs += [rec(rid, "look-ahead", k, v, 1.0, v, 1.0, protocol=proto, rounds=2) for k, v in enumerate(vals)]
    items = digits_noise(frame(recs), tmp_path)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in items[0][1].splitlines()[2:]]
    assert cells == [["look-ahead", "fresh", "-19.3 ± 1", "-21 ± 1", "-23 ± 1", "-23"],
                     ["look-ahead", "reused", "-19.3 ± 1", "-15 ± 1", "-11.3 ± 1", "-11.3"]]
    assert items[1][1].exists()
    assert digits_noise(frame(recs[:3]), tmp_path) == []  # no reused-noise run: no figure
