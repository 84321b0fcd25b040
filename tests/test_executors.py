"""Executors give the same records as in-process runs: per-sample seeds make runs pure functions of the spec."""
import pytest

from bench.executors import ProcessExecutor, SerialExecutor, make_executor, run_all
from bench.runner import RunSpec

SPECS = [RunSpec(task=t, reward=r, method=m, params=p, rounds=2, batch=3, T=10, seed=s)
         for t, r in (("subspace", "f1-theta2"), ("sphere", "linear"))
         for m, p in (("naive", {}), ("look-ahead", {"delta": 0.9})) for s in (0, 1)]
VALUES = ("run_id", "round", "reward_mean", "reward_se", "reward_topk", "off_support_mean", "off_support_se",
          "metrics", "nfe", "vjp", "reward_calls", "status", "hparams", "spec")


def values(results):
    return [[{k: r.get(k) for k in VALUES} for r in recs] for recs in results]


@pytest.fixture(scope="module")
def serial():
    return values(run_all(SPECS, executor=SerialExecutor()))


def test_process_pool_matches_serial(serial):
    got = values(run_all(SPECS, executor=ProcessExecutor(workers=2)))
    assert got == serial and len(got[0]) == 3 and got[0][-1]["status"] == "ok"


def test_dask_local_cluster_matches_serial(serial):
    pytest.importorskip("dask.distributed")
    got = values(run_all(SPECS, executor=make_executor("dask", workers=2)))
    assert got == serial


def test_bad_executor_arguments():
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(ValueError, match="--workers"):
        make_executor("process", workers=0)
    with pytest.raises(ValueError, match="--scheduler needs"):
        make_executor("process", scheduler="tcp://localhost:1")


def test_dask_existing_scheduler_address(serial):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        ex = make_executor("serial", scheduler=c.scheduler_address)  # an address implies dask
        assert "dask on tcp://" in ex.describe()
        got = values(run_all(SPECS[:2], executor=ex))
    assert got == serial[:2]


def _die(code):
    import os

    os._exit(code)  # a worker process dying (OOM kill, segfault), not a run raising


def test_a_dying_worker_is_reported_not_fatal():
    from bench.executors import TaskFailed

    with ProcessExecutor(workers=1) as ex:
        got = list(ex.imap_unordered(_die, [3]))
    assert len(got) == 1 and isinstance(got[0][1], TaskFailed)
