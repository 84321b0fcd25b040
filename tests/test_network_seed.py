"""Network seed and reused noise: run fields that change the run id (and the checkpoint) only when set."""
import pytest
import torch

from bench.runner import RunSpec, build, iter_records
from tasks import pretrain

# a run recorded before these fields existed (reports/quick): its id must stay valid
OLD = {"task": "subspace", "reward": "f1-theta2", "denoiser": "oracle", "method": "unguided", "params": {},
       "rounds": 1, "algorithm": 1, "ft_lr": 1e-06, "ft_start": 40, "ft_steps": 1, "batch": 64, "seed": 0,
       "T": 200, "sampler": "ddpm", "eta": 1.0, "steps": 100, "device": "cpu"}


@pytest.fixture
def tiny_training(tmp_path, monkeypatch):
    """Default networks trained in a few steps in an empty cache."""
    monkeypatch.setenv("GUIDANCE_BENCH_CACHE", str(tmp_path))
    for k, v in {"steps": 3, "n_train": 128, "batch": 16}.items():
        monkeypatch.setitem(pretrain.TRAIN_DEFAULTS, k, v)
    return tmp_path


def test_defaults_keep_old_run_ids_and_set_fields_change_them():
    old = RunSpec(**OLD)
    assert old.run_id == "349d23ddfbb6b61b"
    assert RunSpec(**OLD, network_seed=0, noise="fresh").run_id == old.run_id
    ids = {old.run_id, RunSpec(**OLD, network_seed=1).run_id, RunSpec(**OLD, network_seed=2).run_id,
           RunSpec(**OLD, noise="reuse").run_id}
    assert len(ids) == 4


def test_network_seed_changes_the_checkpoint(tiny_training):
    base = dict(task="sphere", reward="linear", denoiser="trained", method="naive", batch=4, T=20, steps=3)
    recs = {ns: list(iter_records(RunSpec(**base, network_seed=ns))) for ns in (0, 1)}
    for ns, rows in recs.items():
        assert [r["status"] for r in rows] == ["ok", "ok"]
        assert {r["network_seed"] for r in rows} == {ns}
        assert len({r["checkpoint"] for r in rows}) == 1 and len(rows[0]["checkpoint"]) == 16
    assert recs[0][0]["checkpoint"] != recs[1][0]["checkpoint"]
    assert recs[0][0]["run_id"] != recs[1][0]["run_id"]
    assert recs[0][-1]["reward_mean"] != recs[1][-1]["reward_mean"]  # a different network samples differently
    assert len(list(tiny_training.glob("sphere-*.pt"))) == 2  # one cached file per network seed
    # the record's checkpoint is the hash of the cached weights
    task = build(RunSpec(**base)).task
    ck = torch.load(pretrain.checkpoint_path(pretrain.train_config(task, seed=1)), weights_only=True)
    assert ck["sha256"][:16] == recs[1][0]["checkpoint"]
    oracle = list(iter_records(RunSpec(**{**base, "denoiser": "oracle"})))
    assert oracle[0]["checkpoint"] is None and oracle[0]["network_seed"] == 0


def test_bad_network_seed_and_noise_are_rejected():
    with pytest.raises(ValueError, match="oracle has no network seed"):
        build(RunSpec(**OLD, network_seed=1))
    with pytest.raises(ValueError, match="network_seed"):
        build(RunSpec(**{**OLD, "denoiser": "trained"}, network_seed=-1))
    with pytest.raises(ValueError, match="noise"):
        build(RunSpec(**OLD, noise="recycled"))


def test_cli_network_seed_on_oracle_is_a_usage_error(tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "--network-seed", "1", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("bench run: error: the oracle has no network seed")
    assert not (tmp_path / "o").exists()


def test_suite_grid_sweeps_network_seeds(tmp_path):
    from bench.suite import expand, load_suite

    p = tmp_path / "s.toml"
    p.write_text('rounds = 1\nbatch = 4\n[[grid]]\ntasks = ["sphere"]\ndenoisers = ["oracle", "trained"]\n'
                 'methods = ["naive"]\nnetwork_seed = [0, 1, 2]\n', encoding="utf-8")
    specs = expand(load_suite(p))
    got = sorted((s.denoiser, s.network_seed) for s in specs)
    assert got == [("oracle", 0), ("trained", 0), ("trained", 1), ("trained", 2)]
    assert len({s.run_id for s in specs}) == 4


def _draws_per_round(monkeypatch, noise: str, rounds: int = 3):
    """Every NoiseStream draw of a naive Algorithm-1 run, grouped by round, and the samples of each round."""
    from methods import protocol as P
    from methods import make_method
    from methods.sampling import NoiseStream, Sampler
    from tasks import get_task

    streams = []

    class Spy(NoiseStream):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.out = []
            streams.append(self)

        def __call__(self):
            z = super().__call__()
            self.out.append(z.clone())
            return z

    monkeypatch.setattr(P, "NoiseStream", Spy)
    task = get_task("subspace", 20)
    xs = [o["x"] for o in P.run_rounds(make_method("naive", {}), task.oracle("cpu"), task.reward("f1-theta2"),
                                       P.Protocol(rounds=rounds, noise=noise), batch=5, seed=3, sampler=Sampler())]
    return [torch.stack(s.out) for s in streams], xs


def test_reused_noise_makes_every_round_draw_round_one_noise(monkeypatch):
    reuse, x_reuse = _draws_per_round(monkeypatch, "reuse")
    fresh, x_fresh = _draws_per_round(monkeypatch, "fresh")
    assert len(reuse) == len(fresh) == 4  # rounds 0..3
    assert reuse[1].shape[0] == 21  # x_T, then one draw per sampler step (T = 20)
    for k in (2, 3):
        assert torch.equal(reuse[k], reuse[1])  # round k's noise is round 1's, draw for draw
        assert not torch.equal(fresh[k], fresh[1])
    assert torch.equal(reuse[1], fresh[1]) and torch.equal(reuse[0], fresh[0])  # rounds 0 and 1 are unchanged
    assert torch.equal(x_reuse[1], x_fresh[1]) and not torch.equal(x_reuse[3], x_fresh[3])


def test_report_aggregates_over_network_seeds_with_across_network_se():
    import math

    from bench.report_tables import frame, markdown_summary, summary_table

    spec = {**OLD, "task": "sphere", "reward": "linear", "denoiser": "trained", "method": "naive"}
    rewards = {(0, 0): 1.0, (0, 1): 3.0, (1, 0): 4.0, (1, 1): 4.0, (2, 0): 8.0, (2, 1): 10.0}  # (net, seed)
    recs = [{"run_id": f"r{ns}{s}", "task": "sphere", "reward_fn": "linear", "denoiser": "trained",
             "method": "naive", "hparams": {}, "protocol": "one-shot", "round": 1, "seed": s, "network_seed": ns,
             "spec": {**spec, "seed": s, "network_seed": ns}, "status": "ok", "reward_mean": v, "reward_se": 0.1,
             "reward_topk": v, "off_support_mean": 0.5, "off_support_se": 0.0, "nfe": 1, "vjp": 0,
             "reward_calls": 0, "wall_s": 1.0, "peak_mem_mb": 1.0, "metrics": {"norm_minus_1": -0.5 + ns},
             "device": "cpu", "n": 64}
            for (ns, s), v in rewards.items()]
    t = summary_table(frame(recs))
    assert len(t) == 1
    per_net = [2.0, 4.0, 9.0]  # each network's mean over its run seeds
    assert t["reward"][0] == pytest.approx(5.0)
    assert t["reward_se"][0] == pytest.approx(math.sqrt(sum((m - 5) ** 2 for m in per_net) / 2) / math.sqrt(3))
    assert t["nets"][0] == 3 and t["seeds"][0] == 2
    assert t["signed_off"][0] == pytest.approx(0.5)
    md = markdown_summary(t)
    assert "2 × 3 nets" in md and "(signed +0.5)" in md
