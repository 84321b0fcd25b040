"""A run: a picklable spec in, a list of per-round records out (DESIGN.md §2, §5-6)."""
from __future__ import annotations

import hashlib
import json
import math
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from methods import Sampler, make_method
from methods.protocol import Protocol, run_rounds
from tasks import get_task

from .measure import PeakMemory, Stopwatch, tilt_metrics
from .records import code_fingerprint, host_provenance, now, provenance

TOPK = 4  # GGDM --reward_K: top-k reward / off-support over the K highest-reward samples
PER_SAMPLE_MAX = 1024  # records keep per-sample reward / off-support up to this batch size


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; choose cpu, cuda or auto")
    return device


_RUN_IDS: dict[str, str] = {}  # the spec's key (JSON) -> its run id


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's numbers. ``params`` are method hyperparameters."""

    task: str = "subspace"
    reward: str = "f1-theta2"
    denoiser: str = "oracle"
    method: str = "look-ahead"
    params: dict = field(default_factory=dict)
    rounds: int = 1
    algorithm: int = 1
    ft_lr: float = 1e-6
    ft_start: int = 40
    ft_steps: int = 1
    batch: int = 32
    seed: int = 0
    T: int = 200
    sampler: str = "ddpm"
    eta: float = 1.0
    steps: int | None = None
    device: str = "cpu"
    save_samples: str | None = None  # absolute directory: final samples go to <dir>/<run_id>.pt (not in run_id)
    network_seed: int = 0  # training seed of a trained denoiser (0: the default network)
    noise: str = "fresh"   # Algorithm 1 noise per round: "fresh" draws, or "reuse" each sample's round-1 noise
    tilt: float | None = None  # lam of the exact tilt p(x) exp(lam r(x)) the tilt metrics compare with (None: lam param)

    def key(self) -> dict:
        d = asdict(self)
        d["params"] = dict(sorted(self.params.items()))
        d.pop("save_samples")
        return d

    def canonical(self) -> dict:
        """The key with typed, default-resolved hyperparameters and the method and task versions, so
        ``--param delta=0.2``, ``delta = 0.2`` in a suite and the default give one run id, and a version bump
        gives a new one. Unresolvable names keep the raw key (the run will fail with a clear error)."""
        d = self.key()
        try:
            from methods import make_method

            m = make_method(self.method, self.params)
            d.update(params=m.hparams(), method_version=m.version,
                     task_version=get_task(self.task, self.T).version)
        except Exception:
            pass
        for k, default in (("network_seed", 0), ("noise", "fresh"), ("tilt", None)):  # defaults: old run ids stay
            if d.get(k) == default:
                d.pop(k)
        return d

    @property
    def run_id(self) -> str:
        key = json.dumps(self.key(), sort_keys=True, default=str)
        rid = _RUN_IDS.get(key)
        if rid is None:  # resolving the method is the costly part: once per distinct spec and process
            rid = hashlib.sha256(json.dumps(self.canonical(), sort_keys=True, default=str).encode()).hexdigest()[:16]
            from methods import REGISTRY

            if self.method in REGISTRY:  # an unresolved name (a plugin not loaded yet) is not remembered
                _RUN_IDS[key] = rid
        return rid

    @property
    def protocol_name(self) -> str:
        if self.rounds <= 1:
            return "one-shot"
        return f"alg{self.algorithm}" + ("-reuse" if self.noise == "reuse" else "")


@dataclass
class Built:
    task: object
    reward: object
    method: object
    protocol: Protocol
    sampler: Sampler
    device: str


def build(spec: RunSpec) -> Built:
    """Resolve and validate every name and value; raises UnknownName or ValueError, touches nothing."""
    if int(spec.batch) != spec.batch or spec.batch <= 0:
        raise ValueError(f"batch must be a positive integer, got {spec.batch}")
    if spec.rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {spec.rounds}")
    task = get_task(spec.task, spec.T)
    reward = task.reward(spec.reward)
    if spec.denoiser not in task.denoiser_kinds:
        from methods import suggest

        raise suggest(f"denoiser of task {spec.task!r}", spec.denoiser, task.denoiser_kinds)
    method = make_method(spec.method, spec.params)
    protocol = Protocol(spec.rounds, spec.algorithm, spec.ft_lr, spec.ft_start, spec.ft_steps, noise=spec.noise)
    if spec.algorithm == 2 and spec.denoiser == "oracle":
        raise ValueError("algorithm 2 fine-tunes the score network; it needs --denoiser trained")
    if isinstance(spec.network_seed, bool) or int(spec.network_seed) != spec.network_seed or spec.network_seed < 0:
        raise ValueError(f"network_seed must be a non-negative integer, got {spec.network_seed!r}")
    if spec.network_seed and spec.denoiser == "oracle":
        raise ValueError("the oracle has no network seed; --network-seed needs a trained denoiser")
    if spec.noise != "fresh" and method.iterative:
        raise ValueError(f"noise={spec.noise!r} applies to per-round methods; {spec.method!r} runs its own rounds")
    why = getattr(method, "unsupported", lambda *a: None)(reward, spec.denoiser)  # e.g. exact-guidance off the oracle
    if why:
        raise ValueError(why)
    if spec.tilt is not None and not (isinstance(spec.tilt, (int, float)) and math.isfinite(spec.tilt) and spec.tilt >= 0):
        raise ValueError(f"tilt must be a finite number >= 0, got {spec.tilt!r}")
    sampler = Sampler(spec.sampler, spec.eta, spec.steps)
    if spec.save_samples is not None and not Path(spec.save_samples).is_absolute():
        raise ValueError(f"save_samples must be an absolute directory, got {spec.save_samples!r} (a suite resolves "
                         "it against --out; nothing is written relative to the working directory)")
    return Built(task, reward, method, protocol, sampler, resolve_device(spec.device))


def tilt_of(spec: RunSpec, built: Built) -> float | None:
    """The run's declared tilt: ``spec.tilt``, else the method's ``lam`` parameter (None: no tilt metrics)."""
    return spec.tilt if spec.tilt is not None else built.method.hparams().get("lam")


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    n = v.numel()
    return float(v.mean()), float(v.std() / math.sqrt(n)) if n > 1 else 0.0


def evaluate(task, reward, x: torch.Tensor, tilt: float | None = None) -> dict:
    """Per-round statistics of a batch (not counted as cost); ``tilt``: lam of the exact tilt to compare with."""
    with torch.no_grad():
        r = reward(x).double().cpu()
        off = task.off_support(x).double().cpu()
        k = min(TOPK, r.numel())
        top = torch.topk(r, k).indices
        metrics = {name: _mean_se(v.cpu())[0] for name, v in task.metrics(x).items()}
        if hasattr(reward, "metrics"):  # reward-specific metrics (e.g. a held-out evaluator's view)
            metrics.update({name: _mean_se(v.cpu())[0] for name, v in reward.metrics(x).items()})
        metrics["off_support_topk"] = float(off[top].mean())
        metrics.update(tilt_metrics(reward, tilt, x))
        rm, rse = _mean_se(r)
        om, ose = _mean_se(off)
    out = {"reward_mean": rm, "reward_se": rse, "reward_topk": float(r[top].mean()),
           "off_support_mean": om, "off_support_se": ose, "metrics": metrics}
    if r.numel() <= PER_SAMPLE_MAX:  # per-sample values, 7 significant digits: paired differences in compare
        out["reward_per_sample"] = [float(f"{v:.7g}") for v in r.tolist()]
        out["off_support_per_sample"] = [float(f"{v:.7g}") for v in off.tolist()]
    return out


def base_record(spec: RunSpec, built: Built | None, checkpoint: str | None = None) -> dict:
    """Fields every round of a run shares; ``checkpoint`` is the sha256[:16] of the network's weights."""
    prov = provenance()
    return {
        "run_id": spec.run_id, "task": spec.task, "task_version": getattr(built.task, "version", None) if built else None,
        "reward_fn": spec.reward, "denoiser": spec.denoiser, "method": spec.method,
        "method_version": built.method.version if built else None,
        "hparams": built.method.hparams() if built else dict(spec.params), "protocol": "iterative" if built and built.method.iterative else spec.protocol_name,
        "seed": spec.seed, "network_seed": spec.network_seed, "checkpoint": checkpoint, "n": spec.batch,
        "device": built.device if built else spec.device,
        "git": prov["git"], "dirty": prov["dirty"], "torch": prov["torch"], "spec": spec.key(),
        "code": code_fingerprint(), "provenance": host_provenance(),
    }


_WARM: set = set()  # (task, T, denoiser, network seed, device) warmed up in this process
_CALLS = [0]  # release_freed_memory calls in this process
_FULL_EVERY = 64  # ... of which every 64th collects the frozen objects too


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``; the mmap threshold pinned so a
    large earlier free does not move later allocations onto the heap), so the next region's resident high-water
    mark grows by what it allocates, not by what earlier runs left cached in the allocator.

    What survives the collection is frozen (``gc.freeze``), so the next call scans only what came after: a full
    collection of the ~0.2 M objects torch and the loaded tasks keep alive cost ~0.2 s of CPU per run, more than
    half of a small oracle run (issue 14). Every ``_FULL_EVERY``-th call unfreezes first, so cyclic garbage among
    once-frozen objects is still freed."""
    import gc

    _CALLS[0] += 1
    if _CALLS[0] % _FULL_EVERY == 0:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    set_mmap_threshold(128 * 1024, trim=True)  # fixed at glibc's default: no growth after a large free


def set_mmap_threshold(nbytes: int, trim: bool = False) -> None:
    """glibc ``mallopt(M_MMAP_THRESHOLD, nbytes)``: allocations above ``nbytes`` get their own mmap, smaller ones
    come from the heap; ``trim``: then ``malloc_trim(0)``. A no-op without glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
        if trim:
            libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def prepare_measurement(spec: RunSpec, built: Built, den) -> None:
    """Before a run's timing and peak memory: once per (task, denoiser) in this process an untimed warm-up pass
    (an unguided batch, one VJP through the denoiser and the reward, the evaluation), so lazy initialisation
    lands in no run's figures; then ``release_freed_memory``. A run's wall_s / peak_mem_mb thus do not depend
    on what ran before it in the same process."""
    from methods import Counted

    key = (spec.task, spec.T, spec.denoiser, spec.network_seed, built.device)
    if key not in _WARM:
        _WARM.add(key)
        try:  # a warm-up that fails (e.g. a reward without a gradient) is skipped: the run reports its own errors
            gen = run_rounds(make_method("unguided"), den, built.reward, Protocol(0), batch=spec.batch,
                             seed=spec.seed, sampler=built.sampler, device=built.device)
            x = next(gen)["x"].detach().requires_grad_(True)
            cd = Counted(den)
            y = built.reward(cd.x0_hat(x, built.sampler.grid(cd.schedule)[0][0])).sum()
            if y.requires_grad:
                y.backward()
            evaluate(built.task, built.reward, x.detach())
            del gen, x, cd, y
        except Exception:
            pass
    release_freed_memory()


def round_record(spec: RunSpec, built: Built, base: dict, out: dict, x: torch.Tensor, wall_s: float,
                 peak_mem_mb: float) -> dict:
    """The record of one round of a run: ``out`` from ``run_rounds``, ``x`` the run's samples (its rows of a
    batched group, bench/batched.py); status ``diverged`` when a sample is not finite."""
    rec = {**base, "round": out["round"], **evaluate(built.task, built.reward, x, tilt_of(spec, built)),
           **out["cost"].as_dict(), "wall_s": wall_s, "peak_mem_mb": peak_mem_mb, "status": "ok", "error": None,
           "date": now()}
    if out["info"]:
        rec["metrics"].update(out["info"])
    if not torch.isfinite(x).all():
        rec.update(status="diverged", error=f"non-finite samples in round {out['round']}")
    return rec


def iter_records(spec: RunSpec, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Run ``spec``; yield one record per round. Failures become a final ``error``/``diverged`` row."""
    built = last = None
    try:
        built = build(spec)
        den = built.task.denoiser(spec.denoiser, built.device,
                                  **({"network_seed": spec.network_seed} if spec.network_seed else {}))
        watch, mem, last = Stopwatch(built.device), PeakMemory(built.device), None
        gen = run_rounds(built.method, den, built.reward, built.protocol, batch=spec.batch, seed=spec.seed,
                         sampler=built.sampler, device=built.device)
        base = base_record(spec, built, getattr(den, "checkpoint", None))  # identical for every round: once
        prepare_measurement(spec, built, den)
        with mem:
            while True:
                with watch.measure():
                    out = next(gen, None)
                if out is None:
                    break
                last = out
                rec = round_record(spec, built, base, out, out["x"], watch.seconds, mem.read())
                yield rec
                if rec["status"] == "diverged":
                    return
                if progress:
                    progress(out["round"])
        if spec.save_samples and last is not None:
            save_samples(spec, last["x"])
    except Exception as e:  # a failing run is a row, never a crash of the sweep
        from .records import RECORD_KEYS

        failed_round = (last["round"] + 1) if last is not None else (0 if built is not None else None)
        rec = {**dict.fromkeys(RECORD_KEYS), **base_record(spec, built), "round": failed_round, "metrics": {},
               **(last["cost"].as_dict() if last is not None else {}), "status": "error",
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8), "date": now()}
        yield rec


def save_samples(spec: RunSpec, x: torch.Tensor) -> Path:
    """Write the final round's samples to <spec.save_samples>/<run_id>.pt (atomic; read by report figures)."""
    from tasks.pretrain import save_atomic

    path = Path(spec.save_samples) / f"{spec.run_id}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(x.detach().cpu().clone(), path)  # clone: a view would save its whole underlying storage
    return path


def execute(spec: RunSpec) -> list[dict]:
    """All records of one run (picklable entry point for executors)."""
    return list(iter_records(spec))
