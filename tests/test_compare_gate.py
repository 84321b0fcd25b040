"""The pytest-benchmark timing gate (benchmarks/gate.py) on hand-made benchmark JSON: no timing is measured here."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_gate", Path(__file__).resolve().parent.parent / "benchmarks"
                                               / "gate.py")
gate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gate)


def bench_json(path, ratios: dict[str, list[float]], nfe: int = 50):
    """A pytest-benchmark file whose benchmarks have the given per-round guided/unguided time ratios."""
    data = {"benchmarks": [{"name": k, "stats": {}, "extra_info": {
        "log_ratio_to_unguided": [math.log(r) for r in v], "nfe_guided_pass": nfe}} for k, v in ratios.items()]}
    path.write_text(json.dumps(data))
    return str(path)


def test_allowed_change_equals_hand_computed_value():
    """log ratios [0, 0.2] on both sides: mean 0.1, sd sqrt(0.02), se 0.1; allowed 3 * sqrt(0.1^2 + 0.1^2)
    + log 1.25 in log space."""
    lr = [0.0, 0.2]
    assert gate.ratio_stats(lr) == pytest.approx((0.1, 0.1))
    b = {"x": {"extra_info": {"log_ratio_to_unguided": lr}}}
    res = gate.gate(b, b)
    assert res["rows"][0][4] == f"x{math.exp(3 * math.sqrt(0.02) + math.log(1.25)):.2f}" == "x1.91"
    slower = {"x": {"extra_info": {"log_ratio_to_unguided": [v + math.log(1.95) for v in lr]}}}
    assert gate.gate(b, slower)["regressions"] and not gate.gate(slower, b)["regressions"]
    assert not gate.gate(b, {"x": {"extra_info": {"log_ratio_to_unguided": [v + math.log(1.85) for v in lr]}}})[
        "regressions"]


def test_gate_passes_noise_and_catches_a_slower_method(tmp_path, capsys):
    base = {"naive": [2.0, 2.1, 1.9, 2.05, 1.95, 2.0, 2.02], "dno": [10.0, 11.0, 9.0, 10.5, 9.5, 10.2, 9.8]}
    # a loaded machine: every ratio 10 % up and noisier, within the allowance
    noisy = {k: [r * 1.1 * (1 + 0.05 * (-1) ** i) for i, r in enumerate(v)] for k, v in base.items()}
    b, n = bench_json(tmp_path / "b.json", base), bench_json(tmp_path / "n.json", noisy)
    assert gate.main([b, n]) == 0
    assert "2 benchmarks compared, 0 missing, 0 regressions" in capsys.readouterr().out
    slow = bench_json(tmp_path / "s.json", {**base, "naive": [r * 2 for r in base["naive"]]})
    assert gate.main([b, slow]) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "SLOWER" in line][0].startswith("| naive")
    assert gate.main([b, slow, "--tol", "1.5"]) == 0  # a looser floor accepts it
    capsys.readouterr()
    counts = bench_json(tmp_path / "c.json", base, nfe=51)
    assert gate.main([b, counts]) == 1 and "COUNTS nfe_guided_pass 50 -> 51" in capsys.readouterr().out
    part = bench_json(tmp_path / "p.json", {"naive": base["naive"]})
    assert gate.main([b, part]) == 1 and gate.main([b, part, "--allow-missing"]) == 0


@pytest.mark.parametrize("content, says", [
    (None, "No such file"),
    ("not json", "not a JSON file"),
    ('{"benchmarks": []}', "no 'benchmarks' list"),
    ('{"benchmarks": [{"name": "x", "extra_info": {}}]}', "no per-round log_ratio_to_unguided"),
])
def test_unreadable_input_is_one_line_exit_2(tmp_path, capsys, content, says):
    good = bench_json(tmp_path / "good.json", {"x": [1.0, 1.1]})
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    assert gate.main([good, str(bad)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1 and says in cap.err
