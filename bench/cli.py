"""Command line: ``bench run | list | report | pretrain`` (``python -m bench`` works too).

Exit codes: 0 success, 1 a run failed or diverged (or a regression was found), 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import math
import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump): `bench run: error: ... (see bench run --help)`."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_params(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise UsageError(f"--param expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _finite(kind):
    def conv(s):
        v = kind(s)
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {s!r}")
        return v
    return conv


def _positive(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s!r}")
    return v


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="subspace", help="task name (see `bench list`)")
    p.add_argument("--reward", default=None, help="reward of the task (default: the task's first reward)")
    p.add_argument("--denoiser", default="oracle", help="oracle (exact score) or trained (cached network)")
    p.add_argument("--method", default="look-ahead", help="guidance method (see `bench list`)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="method hyperparameter, repeatable, e.g. --param delta=0.2")
    p.add_argument("--rounds", type=int, default=1, help="guided rounds after the unguided round 0 (default 1)")
    p.add_argument("--algorithm", type=int, default=1, choices=(1, 2),
                   help="GGDM Algorithm 1 (iterative guidance) or 2 (+ score fine-tuning)")
    p.add_argument("--ft-lr", type=_finite(float), default=1e-6, help="Algorithm 2 fine-tuning learning rate")
    p.add_argument("--ft-start", type=int, default=40, help="Algorithm 2: first round that fine-tunes")
    p.add_argument("--ft-steps", type=int, default=1, help="Algorithm 2: Adam steps per round")
    p.add_argument("--batch", type=int, default=32, help="samples per round (B)")
    p.add_argument("--seed", type=int, default=0, help="run seed (per-sample seeds derive from it)")
    p.add_argument("--T", type=int, default=200, help="diffusion steps of the schedule (>= 2)")
    p.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"), help="base sampler")
    p.add_argument("--eta", type=_finite(float), default=1.0, help="DDIM eta")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (strided grid; default T)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is fastest for the small vector tasks)")


def spec_from_args(a):
    from tasks import get_task

    from .runner import RunSpec

    if a.T < 2:
        raise UsageError(f"--T must be >= 2, got {a.T}")
    reward = a.reward
    if reward is None:
        reward = next(iter(get_task(a.task, a.T).rewards))
    return RunSpec(task=a.task, reward=reward, denoiser=a.denoiser, method=a.method, params=parse_params(a.param),
                   rounds=a.rounds, algorithm=a.algorithm, ft_lr=a.ft_lr, ft_start=a.ft_start, ft_steps=a.ft_steps,
                   batch=a.batch, seed=a.seed, T=a.T, sampler=a.sampler, eta=a.eta, steps=a.steps, device=a.device)


def cmd_run(a) -> int:
    from tqdm import tqdm

    from .records import RecordWriter
    from .runner import build, iter_records

    spec = spec_from_args(a)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    build(spec)  # validate everything before anything is written
    bar = tqdm(total=spec.rounds + 1, desc=f"{spec.method} on {spec.task}/{spec.denoiser}", disable=None,
               file=sys.stderr)
    status, last = 0, None
    with RecordWriter(a.out) as w:
        for rec in iter_records(spec, progress=lambda r: bar.update(1)):
            w.write(rec)
            last = rec
            if rec["status"] != "ok":
                status = EXIT_FAIL
                print(f"run {rec['status']}: {rec['error']}", file=sys.stderr)
    bar.close()
    if last and last["status"] == "ok":
        print(f"round {last['round']}: reward {last['reward_mean']:.4f} ± {last['reward_se']:.4f}, "
              f"off-support {last['off_support_mean']:.3g}, nfe {last['nfe']}, vjp {last['vjp']}, "
              f"{last['wall_s']:.1f}s -> {w.path}")
    return status


def cmd_list(a) -> int:
    from methods import REGISTRY
    from tasks import TASKS, get_task

    print("TASKS (reward: meaning)")
    for name in TASKS:
        t = get_task(name)
        print(f"  {name} v{t.version}: {t.summary}")
        for r in t.rewards.values():
            print(f"      reward {r.name}: {r.summary}")
        for d, s in t.denoiser_kinds.items():
            print(f"      denoiser {d}: {s}")
    print("\nMETHODS (parameter = default: meaning)")
    for name, cls in REGISTRY.items():
        print(f"  {name} v{cls.version}: {cls.summary}")
        for pname, default, help_ in cls.params():
            print(f"      {pname} = {default!r}: {help_}")
    return EXIT_OK


def cmd_report(a) -> int:
    from .report import write_report

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
    over = {"steps": a.train_steps} if a.train_steps else {}
    load_or_train(task, arch=a.arch, force=a.force, **over)
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
    r.add_argument("--out", required=True, help="output directory (records.jsonl is appended)")
    r.set_defaults(fn=cmd_run)

    ls = sub.add_parser("list", help="list tasks, rewards, denoisers, methods and their parameters")
    ls.set_defaults(fn=cmd_list)

    rp = sub.add_parser("report", help="write Markdown tables and PNG plots from a records directory")
    rp.add_argument("dir", help="directory with records.jsonl (or the file itself)")
    rp.add_argument("--out", default=None, help="where to write the report (default: DIR)")
    rp.add_argument("--figure", action="append", default=None, metavar="NAME",
                    help="extra registered figure (bench/figures*.py), repeatable; remembered in figures.json")
    rp.set_defaults(fn=cmd_report)

    ov = sub.add_parser("overhead", help="time guided vs unguided rounds in one process (ratio + exact counts)")
    ov.add_argument("--task", default="subspace")
    ov.add_argument("--reward", default=None)
    ov.add_argument("--denoiser", default="trained", help="comma-separated denoisers")
    ov.add_argument("--methods", default="naive,look-ahead", help="comma-separated methods")
    ov.add_argument("--batch", type=int, default=32)
    ov.add_argument("--rounds", type=int, default=10, help="timed rounds per method (after one warm-up)")
    ov.add_argument("--T", type=int, default=200)
    ov.add_argument("--device", default="cpu")
    ov.add_argument("--threads", type=_positive, default=None)
    ov.add_argument("--out", default=None, help="directory for overhead.md / overhead.json")
    ov.set_defaults(fn=cmd_overhead)

    from .compare import add_parser as add_compare
    from .suite import add_parser as add_suite

    add_suite(sub)
    add_compare(sub)

    pt = sub.add_parser("pretrain", help="train and cache a task's score network (done on first use otherwise)")
    pt.add_argument("--task", required=True)
    pt.add_argument("--arch", default=None, help="network architecture (default: the task's default)")
    pt.add_argument("--T", type=int, default=200)
    pt.add_argument("--train-steps", type=int, default=None, help="override the number of training steps")
    pt.add_argument("--force", action="store_true", help="retrain even if a valid checkpoint is cached")
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
