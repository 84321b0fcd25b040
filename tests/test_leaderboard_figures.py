"""Fair-comparison figures: robust axes (one diverged point does not stretch them), Pareto fronts, per-method
panels with oracle and trained side by side, reward-vs-NFE-eq curves (best-of-n's N joined)."""
from __future__ import annotations

import csv
import math

import pytest

from bench import atomic
from bench.leaderboard_figures import pareto_front, plot_pareto, plot_reward_nfe, robust_limits


def test_robust_limits_ignore_one_diverged_value():
    bulk = [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    lo, hi = robust_limits(bulk + [1e9, math.nan, math.inf])
    assert lo <= 0.9 and 1.6 <= hi < 10  # covers the bulk; 1e9 would stretch a min/max axis 10^8-fold
    assert robust_limits([1.0, 1.2, 1.5, 1e12])[1] < 10  # four trials, one diverged: quartiles alone would not do
    assert robust_limits([0.82, 0.91, 1.2, 1.6])[1] >= 1.6  # a spread-out but honest handful is kept whole
    assert robust_limits([1.0, 2.0], anchors=(50.0, math.nan))[1] >= 50  # the reference line stays in view
    llo, lhi = robust_limits([0.01, 0.02, 0.03, 0.05, 1e12], log=True)
    assert llo <= 0.01 and 0.05 <= lhi < 100  # a few decades around the bulk, not twelve
    assert robust_limits([math.nan]) is None and robust_limits([-1.0], log=True) is None


def test_pareto_front_by_hand():
    pts = [(0.1, 1.0), (0.2, 0.5), (0.3, 2.0), (0.05, 0.2), (0.4, 1.5), (math.nan, 9.0), (0.5, 3.0)]
    assert pareto_front(pts) == [(0.05, 0.2), (0.1, 1.0), (0.3, 2.0), (0.5, 3.0)]


@pytest.fixture
def captured(monkeypatch):
    """The figure handed to savefig (the write itself still happens, atomically)."""
    figs = []
    real = atomic.savefig

    def keep(fig, path, dpi=110):
        figs.append(fig)
        return real(fig, path, dpi)
    monkeypatch.setattr(atomic, "savefig", keep)
    return figs


def _write(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


TRIALS = ["task", "reward", "denoiser", "network_seed", "method", "trial", "stage", "params", "reward_mean",
          "reward_se", "off_support_mean", "off_support_se", "off_support_limit", "feasible", "best_so_far",
          "selected"]


def test_pareto_panels_per_method_oracle_and_trained_side_by_side(tmp_path, captured):
    rows = []
    for den in ("trained", "oracle"):
        rows.append(["sub", "r", den, 0, "unguided", 1, "baseline", "{}", 1.0, 0.1, 0.01, 0.001, 0.03, True, 1, True])
        for m, k in (("naive", 0.0), ("dps", 1.0)):
            for i, (o, r) in enumerate([(0.012, 1.5), (0.02, 2.0 + k), (0.025, 1.8)]):
                rows.append(["sub", "r", den, 0, m, i + 1, "grid", "{}", r, 0.05, o, 0.002, 0.03, True, r, i == 1])
        rows.append(["sub", "r", den, 0, "dps", 4, "refine", "{}", "nan", "nan", 3e14, "nan", 0.03, False, 3, False])
    _write(tmp_path / "trials.csv", TRIALS, rows)
    path = plot_pareto(tmp_path)
    assert path == tmp_path / "pareto.png" and path.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (fig,) = captured
    axes = fig.axes
    assert len(axes) == 4  # 2 methods x (oracle, trained)
    titles = [a.get_title() for a in axes]
    assert titles[0].startswith("dps · sub/r/oracle") and titles[1].startswith("dps · sub/r/trained")
    assert titles[2].startswith("naive · sub/r/oracle") and titles[3].startswith("naive · sub/r/trained")
    for a in axes:
        lo, hi = a.get_xlim()
        assert hi < 10, (a.get_title(), hi)  # the 3e14 diverged trial does not stretch the off-support axis
        assert a.get_xscale() == "log"
    assert "(1 outside)" in titles[0] and "outside" not in titles[2]
    # the front of dps on the oracle: (0.012, 1.5) -> (0.02, 3.0); (0.025, 1.8) is dominated
    line = [ln for ln in axes[0].get_lines() if ln.get_linestyle() == "-"][0]
    assert list(line.get_xdata()) == [0.012, 0.02] and list(line.get_ydata()) == [1.5, 3.0]


BOARD = ["task", "reward", "denoiser", "network_seed", "tier", "budget", "rank", "method", "params", "reward_mean",
         "reward_lo", "reward_hi", "nfe_eq", "flags"]


def test_reward_nfe_curves_join_best_of_n_and_clip_outliers(tmp_path, captured):
    rows = []
    for tier in (2, 4, 8):
        rows.append(["sub", "r", "oracle", 0, tier, tier * 10, 1, "unguided", "", 1.0, 0.9, 1.1, 20, ""])
        rows.append(["sub", "r", "oracle", 0, tier, tier * 10, 2, f"best-of-n N={tier - 1}", "", 1.0 + tier / 10,
                     0.9 + tier / 10, 1.1 + tier / 10, 10 * tier, ""])
        rows.append(["sub", "r", "oracle", 0, tier, tier * 10, "", "polyak", "", 1e9 if tier == 8 else 2.0, 1.5,
                     2.5, 30 if tier == 2 else 60, "off-support" if tier == 8 else ""])
    _write(tmp_path / "leaderboard.csv", BOARD, rows)
    assert plot_reward_nfe(tmp_path) == tmp_path / "reward_nfe.png"
    (fig,) = captured
    (ax,) = fig.axes
    labels = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert sorted(labels) == ["best-of-n", "polyak", "unguided"]
    bon = next(ln for ln in ax.get_lines() if ln.get_label() == "best-of-n")
    assert list(bon.get_xdata()) == [20.0, 40.0, 80.0]  # one curve over the three N
    unguided = next(ln for ln in ax.get_lines() if ln.get_label() == "unguided")
    assert list(unguided.get_xdata()) == [20.0]  # read at the same cost in every tier: one point
    assert ax.get_ylim()[1] < 10  # the 1e9 reward is drawn on the edge, not on a stretched axis
    assert any("outside" in t.get_text() for t in ax.texts)
