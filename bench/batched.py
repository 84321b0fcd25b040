"""Batched sweeps (issue 14): runs that differ only in seeds and a method's ``batch_params`` share one stacked batch.

Runs of a batchable method (``methods.base.is_batchable``) with the same task, reward, denoiser (and network seed),
method structure (``Method.batch_key``: every hyperparameter but the batched ones, whose zero-ness counts), rounds,
protocol, sampler, T, steps, noise mode and device form a *group*. A group runs as one pass of the round loop on the
stacked batch: every run's rows draw that run's own per-sample noise, and every batched hyperparameter that differs
becomes a per-sample [B] tensor (``Method.stack``). The result is split back into the runs' records, with the same
run ids and the same values as separate runs (bit for bit where the arithmetic is batch-size independent, which the
contract test checks: tests/test_batched_contract.py).

Attribution inside a group: each run's ``wall_s`` and ``peak_mem_mb`` are the group's measured time and peak memory
times the run's share of the group's rows; the record key ``group`` keeps the whole: {"runs", "rows", "wall_s",
"peak_mem_mb"} (cumulative over rounds, like wall_s). Counts (nfe, vjp, reward_calls) are per returned sample,
exactly as when run alone. A group that raises anything runs again run by run, so failures and divergence are
recorded exactly as without batching (a run that diverges inside a healthy group stops at that round, as alone).

Groups hold at most ``group_rows`` rows (``--group-rows``, env ``GUIDANCE_BENCH_GROUP_ROWS``; by default
``DEFAULT_GROUP_ROWS``, fewer for large samples: at most ``DEFAULT_GROUP_ELEMENTS`` numbers per stacked [rows, *shape]
tensor, so an image task's group stays as small as its runs); a run larger than the cap runs alone. When there are fewer groups than executor workers the
largest groups are halved so every worker gets work. The driver writes each run's records as its group finishes, so
an interruption loses at most the groups in flight.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .runner import RunSpec

__all__ = ["DEFAULT_GROUP_ROWS", "default_rows", "group_rows_default", "batch_key", "plan_groups", "execute_group", "imap_runs"]

DEFAULT_GROUP_ROWS = 4096  # rows of a stacked batch: 1 MiB per [rows, 64] float32 tensor of the vector tasks
DEFAULT_GROUP_ELEMENTS = 2**22  # numbers per stacked [rows, *shape] tensor (16 MiB in float32) by default
ENV = "GUIDANCE_BENCH_GROUP_ROWS"


def default_rows(spec: RunSpec) -> int:
    """The default cap for a spec's group: ``DEFAULT_GROUP_ROWS``, fewer when a sample has many numbers."""
    import math

    from tasks import get_task

    try:
        numel = math.prod(get_task(spec.task, spec.T).shape)
    except Exception:
        return DEFAULT_GROUP_ROWS
    return max(1, min(DEFAULT_GROUP_ROWS, DEFAULT_GROUP_ELEMENTS // max(1, numel)))


def group_rows_default() -> int | None:
    """The cap set by ``GUIDANCE_BENCH_GROUP_ROWS`` (a positive integer), or None (the per-task default)."""
    v = os.environ.get(ENV)
    if v is None or not v.strip():
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"{ENV} must be a positive integer, got {v!r}") from None
    if n < 1:
        raise ValueError(f"{ENV} must be a positive integer, got {v!r}")
    return n


def batch_key(spec: RunSpec):
    """The group a run may join (hashable), or None when it must run alone: a method that is not batchable, an
    iterative method, Algorithm 2 fine-tuning (one network trained on the whole batch), or a spec that does not
    build (it runs alone and reports its own error)."""
    from methods import get_method, make_method
    from methods.base import is_batchable

    try:
        cls = get_method(spec.method)
        if not is_batchable(cls) or cls.iterative:
            return None
        if spec.algorithm == 2 and spec.rounds > spec.ft_start:
            return None
        structure = make_method(spec.method, spec.params).batch_key()
    except Exception:
        return None
    k = spec.key()
    for f in ("params", "seed", "batch"):
        k.pop(f)
    return tuple(sorted((f, repr(v)) for f, v in k.items())) + (("method_structure", repr(structure)),)


def plan_groups(specs: list[RunSpec], group_rows: int | None = None, workers: int = 1) -> list[list[int]]:
    """Indices of ``specs`` in groups, in order of first appearance; each group's rows (sum of batches) at most
    ``group_rows`` (None: ``GUIDANCE_BENCH_GROUP_ROWS``, else ``default_rows``; a single larger run is a group of
    its own); then, while there are fewer groups than ``workers``, the group with the most runs is halved."""
    cap = group_rows_default() if group_rows is None else int(group_rows)
    if cap is not None and cap < 1:
        raise ValueError(f"--group-rows must be >= 1, got {cap}")
    buckets: dict = {}
    order: list = []
    for i, s in enumerate(specs):
        k = batch_key(s)
        k = ("alone", i) if k is None else k
        if k not in buckets:
            buckets[k] = []
            order.append(k)
        buckets[k].append(i)
    groups: list[list[int]] = []
    for k in order:
        cur, rows = [], 0
        limit = cap if cap is not None else default_rows(specs[buckets[k][0]])
        for i in buckets[k]:
            b = int(specs[i].batch)
            if cur and rows + b > limit:
                groups.append(cur)
                cur, rows = [], 0
            cur.append(i)
            rows += b
        groups.append(cur)
    while len(groups) < workers:
        j = max(range(len(groups)), key=lambda g: len(groups[g]), default=None)
        if j is None or len(groups[j]) < 2:
            break
        g = groups.pop(j)
        groups[j:j] = [g[:len(g) // 2], g[len(g) // 2:]]
    return groups


def execute_group(specs: list[RunSpec]) -> list[list[dict]]:
    """The records of every run of a group (picklable entry point for executors), in the order of ``specs``. A
    group of one, or a group that raises, runs run by run (``runner.execute``)."""
    from .runner import execute

    if len(specs) > 1:
        try:
            return _run_group(specs)
        except Exception:  # whatever went wrong, each run alone records its own outcome
            pass
    return [execute(s) for s in specs]


def _run_group(specs: list[RunSpec]) -> list[list[dict]]:
    from methods.protocol import run_rounds

    from .measure import PeakMemory, Stopwatch
    from .runner import base_record, build, prepare_measurement, round_record, save_samples

    built = [build(s) for s in specs]
    s0, b0 = specs[0], built[0]
    if len({batch_key(s) for s in specs}) != 1 or batch_key(s0) is None:
        raise ValueError("these runs cannot share a batch")
    den = b0.task.denoiser(s0.denoiser, b0.device, **({"network_seed": s0.network_seed} if s0.network_seed else {}))
    rows = [int(s.batch) for s in specs]
    total = sum(rows)
    method = type(b0.method).stack([b.method for b in built], rows)
    gen = run_rounds(method, den, b0.reward, b0.protocol, batch=total, seed=s0.seed, sampler=b0.sampler,
                     device=b0.device, runs=[(s.seed, s.batch) for s in specs])
    ckpt = getattr(den, "checkpoint", None)
    bases = [base_record(s, b, ckpt) for s, b in zip(specs, built)]
    prepare_measurement(s0, b0, den)
    watch, mem = Stopwatch(b0.device), PeakMemory(b0.device)
    out: list[list[dict]] = [[] for _ in specs]
    live, last = [True] * len(specs), [None] * len(specs)
    with heap_for_large_tensors(), mem:
        while any(live):
            with watch.measure():
                res = next(gen, None)
            if res is None:
                break
            peak = mem.read()
            group = {"runs": len(specs), "rows": total, "wall_s": watch.seconds, "peak_mem_mb": peak}
            for i, x in enumerate(res["x"].split(rows)):
                if not live[i]:
                    continue
                share = rows[i] / total  # the group's time and peak memory, by the run's share of the rows
                rec = round_record(specs[i], built[i], bases[i], res, x, watch.seconds * share, peak * share)
                rec["group"] = group
                live[i] = rec["status"] == "ok"  # diverged: the run stops here, as it would alone
                out[i].append(rec)
                last[i] = x
    for i, s in enumerate(specs):
        if s.save_samples and live[i] and last[i] is not None:
            save_samples(s, last[i])
    return out


@contextmanager
def heap_for_large_tensors():
    """glibc: serve allocations up to 32 MiB from the heap during a group. ``runner.release_freed_memory`` pins the
    mmap threshold at 128 KiB (for per-run peak memory), so every stacked [rows, 128] tensor of a group (1 MiB at
    2048 rows) was a fresh mmap, page-faulted in and unmapped on free: 40 % of a trained-network group's CPU time in
    system time (reports/batching). Same arithmetic, same results; the group's peak then includes heap reuse. On
    exit the threshold is pinned again and the heap trimmed, so the next run (alone or a group) starts as before."""
    from .runner import release_freed_memory, set_mmap_threshold

    set_mmap_threshold(32 * 2**20)
    try:
        yield
    finally:
        release_freed_memory()


def imap_runs(ex, specs: list[RunSpec], group_rows: int | None = None) -> Iterator[tuple[int, object]]:
    """Like ``ex.imap_unordered(runner.execute, specs)``: ``(index into specs, records)`` per run, as groups
    finish (a failed worker yields its ``TaskFailed`` for every run of its group)."""
    from .executors import TaskFailed

    groups = plan_groups(specs, group_rows, getattr(ex, "workers", 1))
    for gi, res in ex.imap_unordered(execute_group, [[specs[i] for i in g] for g in groups]):
        if isinstance(res, TaskFailed):
            for i in groups[gi]:
                yield i, res
        else:
            yield from zip(groups[gi], res)
