"""Reports written by ``bench suite`` / ``bench report``: tables, plots, suite figures, Pareto fronts, time ratios."""
import json

from bench.cli import main
from bench.figures import FIGURES
from bench.records import read_records
from bench.report import write_report
from bench.report_plots import pareto_front
from bench.report_tables import best_configs, frame, summary_table

SUITE = """
description = "report test"
figures = ["test-only-figure"]
rounds = 2
batch = 4
T = 10
seeds = [0, 1]
[[grid]]
tasks = ["subspace"]
denoisers = ["oracle"]
methods = ["unguided", "naive", "look-ahead"]
[grid.params.look-ahead]
delta = [0.2, 2.0]
"""


def test_suite_writes_the_report_and_reproduces_suite_figures(tmp_path, capsys):
    FIGURES["test-only-figure"] = lambda df, out: [("Test figure", f"{df['run_id'].nunique()} runs seen")]
    try:
        p = tmp_path / "s.toml"
        p.write_text(SUITE)
        out = tmp_path / "out"
        assert main(["suite", str(p), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "reward ↑" in printed and "look-ahead" in printed
        assert json.loads((out / "figures.json").read_text()) == ["test-only-figure"]
        (out / "summary.md").unlink()
        assert main(["report", str(out)]) == 0  # from the records and figures.json alone
    finally:
        del FIGURES["test-only-figure"]
    md = (out / "summary.md").read_text()
    for heading in ("## Reward and off-support", "## Best configuration per method", "## Cost", "### Test figure",
                    "8 runs seen", "time / unguided", "NFE-eq"):
        assert heading in md, heading
    for png in ("reward_mean_vs_round", "off_support_mean_vs_round", "reward_vs_compute", "pareto"):
        assert (out / f"subspace_f1-theta2_{png}.png").stat().st_size > 1000
    table = summary_table(frame(read_records(out)))
    assert set(table["seeds"]) == {2}
    assert table.loc[table["method"] == "unguided", "time_ratio"].tolist() == [1.0]
    best = best_configs(table)
    la = table[table["method"] == "look-ahead"]
    assert len(best) == 3 and best[best["method"] == "look-ahead"]["reward"].item() == la["reward"].max()
    assert "| look-ahead | delta=" in md.split("## Best configuration per method")[1].split("## Cost")[0]


def test_unknown_figure_is_reported_not_fatal(tmp_path):
    from bench.executors import SerialExecutor
    from bench.runner import RunSpec
    from bench.suite import run_suite

    run_suite([RunSpec(method="naive", batch=2, T=10)], tmp_path, SerialExecutor(), progress=False, log=lambda m: 0)
    write_report(tmp_path, figures=["no-such-figure"])
    assert "unknown figure 'no-such-figure'" in (tmp_path / "summary.md").read_text()


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [(0.1, 1.0), (0.2, 0.5), (0.05, 0.2), (0.3, 2.0), (0.3, 1.5), (0.01, 0.2)]
    assert pareto_front(pts) == [(0.01, 0.2), (0.1, 1.0), (0.3, 2.0)]


def test_index_of_reports_links_every_report(tmp_path):
    from bench.executors import SerialExecutor
    from bench.runner import RunSpec
    from bench.suite import run_suite

    root = tmp_path / "reports"
    run_suite([RunSpec(method="naive", batch=2, T=10)], root / "one", SerialExecutor(), progress=False,
              log=lambda m: 0)
    write_report(root / "one")  # a report under reports/ refreshes the index
    index = (root / "README.md").read_text()
    assert "[one](one/summary.md)" in index and "naive on subspace (oracle)" in index
