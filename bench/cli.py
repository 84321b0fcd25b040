"""Command line: ``bench run | list | report | pretrain`` (``python -m bench`` works too).

Exit codes: 0 success, 1 a run failed or diverged (or a regression was found), 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import sys

from .inputs import UsageError, _finite, _nonneg, _positive, check_spec, out_dir  # noqa: F401  (re-exported)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every option's default, except where the help text already says it (or it is unset)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "default" in h or action.default is None or action.default is False or action.default == [] \
                or action.default is argparse.SUPPRESS:
            return h
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): `bench run: error: ... (see bench run --help)`; ``--help``
    lists defaults."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_params(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UsageError(f"--param expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        if k.strip() in out:
            raise UsageError(f"--param {k.strip()} given twice ({out[k.strip()]!r} and {v.strip()!r})")
        out[k.strip()] = v.strip()
    return out


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="subspace", help="task name (see `bench list`)")
    p.add_argument("--reward", default=None, help="reward of the task (default: the task's first reward)")
    p.add_argument("--denoiser", default=None,
                   help="oracle (exact score) or trained (cached network); default: the task's first denoiser "
                        "(oracle where the task has one, trained on digits)")
    p.add_argument("--method", default="look-ahead", help="guidance method (see `bench list`)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method hyperparameter, repeatable, e.g. --param delta=0.2")
    p.add_argument("--rounds", type=int, default=1, help="guided rounds after the unguided round 0")
    p.add_argument("--algorithm", type=int, default=1, choices=(1, 2),
                   help="GGDM Algorithm 1 (iterative guidance) or 2 (+ score fine-tuning)")
    p.add_argument("--ft-lr", type=_finite(float), default=1e-6, help="Algorithm 2 fine-tuning learning rate")
    p.add_argument("--ft-start", type=int, default=40, help="Algorithm 2: first round that fine-tunes")
    p.add_argument("--ft-steps", type=int, default=1, help="Algorithm 2: Adam steps per round")
    p.add_argument("--batch", type=int, default=32, help="samples per round (B)")
    p.add_argument("--seed", type=_nonneg, default=0, help="run seed (per-sample seeds derive from it)")
    p.add_argument("--network-seed", type=int, default=0,
                   help="training seed of the trained denoiser (0: the default network; part of the run id)")
    p.add_argument("--noise", default="fresh", choices=("fresh", "reuse"),
                   help="Algorithm 1 noise: fresh every round, or reuse each sample's round-1 noise")
    p.add_argument("--tilt", type=_finite(float), default=None,
                   help="lam of the exact tilt p(x) exp(lam r(x)) the tilt metrics compare with (default: the "
                        "method's lam parameter, if any; subspace f1 and sphere linear rewards)")
    p.add_argument("--T", type=int, default=200, help="diffusion steps of the schedule (>= 2)")
    p.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"), help="base sampler")
    p.add_argument("--eta", type=_finite(float), default=None,
                   help="DDIM eta in [0, 1] (0 deterministic; default 1); only with --sampler ddim")
    p.add_argument("--steps", type=int, default=None, help="sampling steps, 1..T (strided grid; default T)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the small vector tasks)")


def spec_from_args(a):
    from tasks import get_task

    from .runner import RunSpec

    if a.T < 2:
        raise UsageError(f"--T must be >= 2, got {a.T}")
    if a.eta is not None and a.sampler != "ddim":
        raise UsageError(f"--eta applies to --sampler ddim only (the sampler is {a.sampler})")
    reward = a.reward
    if reward is None:
        reward = next(iter(get_task(a.task, a.T).rewards))
    denoiser = a.denoiser or next(iter(get_task(a.task, a.T).denoiser_kinds))
    return RunSpec(task=a.task, reward=reward, denoiser=denoiser, method=a.method, params=parse_params(a.param),
                   rounds=a.rounds, algorithm=a.algorithm, ft_lr=a.ft_lr, ft_start=a.ft_start, ft_steps=a.ft_steps,
                   batch=a.batch, seed=a.seed, T=a.T, sampler=a.sampler,
                   eta=1.0 if a.eta is None else a.eta, steps=a.steps, device=a.device,
                   network_seed=a.network_seed, noise=a.noise, tilt=a.tilt)


def cmd_run(a) -> int:
    from .progress import Progress
    from .records import DirLock, RecordWriter
    from .runner import build, iter_records

    spec = spec_from_args(a)
    if a.save_samples:  # absolute: under --out whatever the working directory
        import dataclasses
        from pathlib import Path

        spec = dataclasses.replace(spec, save_samples=str(Path(a.out).resolve() / "samples"))
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    check_spec(spec)
    build(spec)  # validate everything before anything is written
    status, last = 0, None
    with DirLock(a.out, "bench run"), RecordWriter(a.out) as w, \
            Progress(spec.rounds + 1, f"{spec.method} on {spec.task}/{spec.denoiser}", "round") as bar:
        for rec in iter_records(spec, progress=lambda r: bar.update(1)):
            w.write(rec)
            last = rec
            if rec["status"] != "ok":
                status = EXIT_FAIL
                print(f"run {rec['status']}: {rec['error']}", file=sys.stderr)
    if last and last["status"] == "ok":
        print(f"round {last['round']}: reward {last['reward_mean']:.4f} ± {last['reward_se']:.4f}, "
              f"off-support {last['off_support_mean']:.3g}, nfe {last['nfe']}, vjp {last['vjp']}, "
              f"{last['wall_s']:.1f}s -> {w.path}")
    return status


def list_data() -> dict:
    """Everything ``bench list`` shows: tasks (rewards, denoisers), methods (parameters with defaults and allowed
    values), shipped suites (descriptions)."""
    from dataclasses import MISSING, fields

    from methods import REGISTRY
    from tasks import TASKS, get_task

    from .suite import available, load_suite

    tasks = {}
    for name in TASKS:
        t = get_task(name)
        tasks[name] = {"version": t.version, "summary": t.summary,
                       "rewards": {r.name: r.summary for r in t.rewards.values()},
                       "denoisers": dict(t.denoiser_kinds)}
    methods = {}
    for name, cls in REGISTRY.items():
        params = [{"name": f.name, "default": None if f.default is MISSING else f.default,
                   "help": f.metadata.get("help", ""), "min": f.metadata.get("min"),
                   "choices": list(f.metadata["choices"]) if f.metadata.get("choices") else None}
                  for f in fields(cls)]
        space = getattr(cls, "search_space", None) or {}
        methods[name] = {"version": cls.version, "summary": cls.summary, "params": params,
                         "search_space": {k: str(v) for k, v in space.items()}}
    suites = {}
    for name in available():
        try:
            suites[name] = load_suite(name).description
        except ValueError as e:  # a broken suite file is listed, not fatal
            suites[name] = f"(unreadable: {e})"
    return {"tasks": tasks, "methods": methods, "suites": suites}


def cmd_list(a) -> int:
    d = list_data()
    if a.json:
        import json

        print(json.dumps(d, indent=1, default=str))
        return EXIT_OK
    print("TASKS (reward: meaning)")
    for name, t in d["tasks"].items():
        print(f"  {name} v{t['version']}: {t['summary']}")
        for r, summary in t["rewards"].items():
            print(f"      reward {r}: {summary}")
        for k, summary in t["denoisers"].items():
            print(f"      denoiser {k}: {summary}")
    print("\nMETHODS (parameter = default: meaning [allowed values])")
    for name, m in d["methods"].items():
        print(f"  {name} v{m['version']}: {m['summary']}")
        for p in m["params"]:
            allowed = f" [one of: {', '.join(map(str, p['choices']))}]" if p["choices"] else ""
            lo = f" [>= {p['min']}]" if p["min"] is not None else ""
            print(f"      {p['name']} = {p['default']!r}: {p['help']}{allowed}{lo}")
        space = ", ".join(f"{k} {v}" for k, v in m.get("search_space", {}).items()) or "(nothing to tune)"
        print(f"      search space: {space}")
    print("\nSUITES (bench suite NAME)")
    for name, desc in d["suites"].items():
        print(f"  {name}: {desc}")
    return EXIT_OK


def cmd_report(a) -> int:
    from .report import write_report

    if a.figure:
        from methods import suggest

        from .figures import load_all

        registry = load_all()
        for name in a.figure:
            if name not in registry:
                raise suggest("figure", name, registry)
    paths = write_report(a.dir, out=a.out, figures=a.figure)
    for p in paths:
        print(p)
    return EXIT_OK


def cmd_pretrain(a) -> int:
    from tasks import get_task
    from tasks.pretrain import checkpoint_info, load_or_train

    task = get_task(a.task, a.T)
    if not hasattr(task, "sample_data"):
        raise UsageError(f"task {a.task!r} has nothing to pretrain")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    from .progress import steps

    over = {"steps": a.train_steps} if a.train_steps else {}
    if a.network_seed:
        over["seed"] = a.network_seed  # the network seed is the training seed (a separate cached file)
    load_or_train(task, arch=a.arch, force=a.force, progress=steps, **over)
    print(checkpoint_info(task, arch=a.arch, **over))
    return EXIT_OK


def cmd_overhead(a) -> int:
    import torch

    from .overhead import measure_overhead, overhead_markdown, write_overhead

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.rounds < 1 or a.batch < 1:
        raise UsageError("--rounds and --batch must be >= 1")
    rows = []
    for den in a.denoiser.split(","):
        rows += measure_overhead(a.task, a.reward, den, a.methods.split(","), batch=a.batch, rounds=a.rounds, T=a.T,
                                 device=a.device)
    print(overhead_markdown(rows))
    if a.out:
        print(write_overhead(rows, a.out))
    return EXIT_OK


def make_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bench", description="Benchmark suite for diffusion guidance strategies.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=Parser)

    r = sub.add_parser("run", help="run one method on one task; append per-round records to OUT/records.jsonl",
                       description="Run a method (one-shot or GGDM Algorithm 1/2 rounds) and record every round.")
    add_run_args(r)
    r.add_argument("--out", required=True, type=out_dir, help="output directory (records.jsonl is appended)")
    r.add_argument("--save-samples", action="store_true",
                   help="save the final round's samples to OUT/samples/<run_id>.pt (drawn by the digits-grid figure)")
    r.set_defaults(fn=cmd_run)

    ls = sub.add_parser("list", help="list tasks, rewards, denoisers, methods (parameters, allowed values) and suites")
    ls.add_argument("--json", action="store_true", help="print the same as JSON")
    ls.set_defaults(fn=cmd_list)

    rp = sub.add_parser("report", help="write Markdown tables and PNG plots from a records directory")
    rp.add_argument("dir", type=out_dir, help="directory with records.jsonl (or the file itself)")
    rp.add_argument("--out", default=None, type=out_dir, help="where to write the report (default: DIR)")
    rp.add_argument("--figure", action="append", default=None, metavar="NAME",
                    help="extra registered figure (bench/figures*.py), repeatable; remembered in figures.json")
    rp.set_defaults(fn=cmd_report)

    ov = sub.add_parser("overhead", help="time guided vs unguided rounds in one process (ratio + exact counts)")
    ov.add_argument("--task", default="subspace", help="task name")
    ov.add_argument("--reward", default=None, help="reward of the task (default: the task's first reward)")
    ov.add_argument("--denoiser", default="trained", help="comma-separated denoisers")
    ov.add_argument("--methods", default="naive,look-ahead", help="comma-separated methods")
    ov.add_argument("--batch", type=int, default=32, help="samples per round")
    ov.add_argument("--rounds", type=int, default=10, help="timed rounds per method (after one warm-up)")
    ov.add_argument("--T", type=int, default=200, help="diffusion steps of the schedule")
    ov.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ov.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's choice)")
    ov.add_argument("--out", default=None, type=out_dir, help="directory for overhead.md / overhead.json")
    ov.set_defaults(fn=cmd_overhead)

    from .archive import add_parser as add_archive
    from .compare import add_parser as add_compare
    from .suite_cli import add_parser as add_suite

    add_suite(sub)
    add_compare(sub)
    add_archive(sub)
    from .validate import add_parser as add_validate

    add_validate(sub)

    pt = sub.add_parser("pretrain", help="train and cache a task's score network (done on first use otherwise)")
    pt.add_argument("--task", required=True, help="task name (see `bench list`)")
    pt.add_argument("--arch", default=None, help="network architecture (default: the task's default)")
    pt.add_argument("--T", type=int, default=200, help="diffusion steps of the schedule")
    pt.add_argument("--train-steps", type=int, default=None, help="override the number of training steps")
    pt.add_argument("--force", action="store_true", help="retrain even if a valid checkpoint is cached")
    pt.add_argument("--network-seed", type=_nonneg, default=0, help="training seed (0: the default network)")
    pt.add_argument("--threads", type=_positive, default=None, help="torch CPU threads (default: torch's choice)")
    pt.set_defaults(fn=cmd_pretrain)
    add_plugin_option(p, "plugin_top")
    for sp in sub.choices.values():  # every command, also those added by other modules
        add_plugin_option(sp, "plugin")
    return p


def add_plugin_option(p: argparse.ArgumentParser, dest: str) -> None:
    p.add_argument("--plugin", dest=dest, action="append", default=[], metavar="MODULE_OR_FILE",
                   help="load a plugin (module name or .py file) that registers methods, rewards or tasks; "
                        "repeatable (bench/plugins.py; README: Plugins)")


def main(argv: list[str] | None = None) -> int:
    from methods import UnknownName

    parser = make_parser()
    a = parser.parse_args(argv)
    import os
    import shlex

    # the command line records carry as provenance (spawned workers inherit it through the environment)
    os.environ["GUIDANCE_BENCH_ARGV"] = shlex.join(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        from .plugins import env_specs, load_plugins

        load_plugins(env_specs() + getattr(a, "plugin_top", []) + getattr(a, "plugin", []))
        return a.fn(a)
    except (UsageError, UnknownName, ValueError) as e:
        print(f"bench {a.cmd}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a missing input or an output path that is a file: bad input, not a crash
        print(f"bench {a.cmd}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
