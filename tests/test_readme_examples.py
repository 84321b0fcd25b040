"""The README's examples run as written (issue 17.3). Every ``bench ...`` command of a fenced ``bash`` block is run,
in README order, and must exit 0. The one rule for what is changed, so the test stays fast:

- ``bench suite ...`` gets ``--dry-run`` (it still expands and validates every run and reads ``--out``);
- ``bench run`` / ``bench overhead``: ``--rounds N`` becomes ``--rounds min(N, 1)`` and ``--batch B`` becomes
  ``--batch 4`` (both added when absent); every other option is kept as written;
- a record directory read by ``bench report`` / ``compare`` / ``archive`` that the README filled with a suite
  (dry-run here) gets one tiny ``bench run`` first;
- commands run in a scratch directory that links the repository's inputs (``examples/``, ``bench/``, ...) and holds
  a copy of ``reports/`` (records and sidecars, no images), ``/tmp/...`` paths point into the scratch directory, and
  trained networks are tiny ones in a scratch cache (``tests/tiny_nets.py``);
- a segment of ``a && b`` that is not a ``bench`` command (``pip``, ``pytest``, ``<change code>``) is not run, and a
  line ending in ``# no-test`` is skipped (for a command that truly cannot run here; use sparingly).

Commands that may load plugins (``--plugin``, ``GUIDANCE_BENCH_PLUGINS``, a suite given as a ``.toml`` file, which
can list ``plugins``) run in a subprocess, so what they register does not leak into the other tests; the rest run
in this process (fast), and the test checks that they left the method and task registries as they were."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SEPARATORS = {"&&", "||", ";", "|"}
TINY_RUN = ["--rounds", "1", "--batch", "4", "--T", "20"]
RECORD_INPUTS = {"report": 1, "compare": 2, "archive": 1}  # leading positionals that are record directories


def bash_lines(text: str) -> list[tuple[int, str]]:
    """(README line number, logical line) of every fenced bash/sh/shell block, backslash continuations joined."""
    out, block, buf, start = [], False, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s.startswith("```"):
            block = not block and s[3:].strip() in ("bash", "sh", "shell", "console")
            continue
        if not block:
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        out.append((start, buf + s))
        buf = ""
    return out


def commands(text: str) -> list[tuple[int, dict, list[str]]]:
    """(line, env, argv after ``bench``) for every bench command, comments dropped, ``# no-test`` lines skipped."""
    cmds = []
    for n, line in bash_lines(text):
        if re.search(r"#\s*no-test\s*$", line):
            continue
        seg: list[str] = []
        for tok in shlex.split(line, comments=True) + ["&&"]:
            if tok not in SEPARATORS:
                seg.append(tok)
                continue
            env = {}
            while seg and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[0]):
                k, v = seg.pop(0).split("=", 1)
                env[k] = v
            if seg[:3] in (["python", "-m", "bench"], ["python3", "-m", "bench"]):
                seg = seg[2:]
            if seg and seg[0] == "bench" and not any(t.startswith("<") for t in seg):
                cmds.append((n, env, seg[1:]))
            seg = []
    return cmds


def subcommand(argv: list[str]) -> str | None:
    from bench.cli import make_parser

    names = next(a.choices for a in make_parser()._actions if getattr(a, "choices", None))
    return next((t for t in argv if t in names), None)


def _set(argv: list[str], opt: str, fn, absent: str) -> list[str]:
    if opt in argv:
        i = argv.index(opt)
        return argv[: i + 1] + [fn(argv[i + 1])] + argv[i + 2:]
    return argv + [opt, absent]


def tiny(argv: list[str], tmp: Path) -> list[str]:
    """The override rule of the module docstring (without the record-directory fill)."""
    argv = [str(tmp / t[len("/tmp/"):]) if t.startswith("/tmp/") else t for t in argv]
    cmd = subcommand(argv)
    if cmd == "suite" and "--dry-run" not in argv:
        argv = argv + ["--dry-run"]
    if cmd in ("run", "overhead"):
        argv = _set(argv, "--rounds", lambda v: str(min(int(v), 1)), "1")
        argv = _set(argv, "--batch", lambda v: "4", "4")
    return argv


def record_inputs(argv: list[str]) -> list[str]:
    cmd = subcommand(argv)
    if cmd not in RECORD_INPUTS:
        return []
    rest = argv[argv.index(cmd) + 1:]
    pos = []
    for t in rest:
        if t.startswith("-"):
            break
        pos.append(t)
    return pos[: RECORD_INPUTS[cmd]]


def test_extraction_and_override_rule():
    text = ("```bash\nbench run --task subspace --rounds 1000 \\\n   --batch 32 --out out/la   # a comment\n"
            "X=1 bench suite quick --out /tmp/base && <change code> && bench compare /tmp/a /tmp/b\n"
            "pip install -e . && bench list\nbench suite full   # no-test\npytest benchmarks\n"
            "python -m bench list --json\n```\n"
            "```python\nbench run --out x\n```\n")
    cmds = commands(text)
    assert [(n, env, argv[0]) for n, env, argv in cmds] == [(2, {}, "run"), (4, {"X": "1"}, "suite"),
                                                           (4, {}, "compare"), (5, {}, "list"), (8, {}, "list")]
    tmp = Path("/scratch")
    assert tiny(cmds[0][2], tmp) == ["run", "--task", "subspace", "--rounds", "1", "--batch", "4", "--out", "out/la"]
    assert tiny(cmds[1][2], tmp) == ["suite", "quick", "--out", "/scratch/base", "--dry-run"]
    assert tiny(["overhead", "--threads", "1"], tmp) == ["overhead", "--threads", "1", "--rounds", "1", "--batch", "4"]
    assert record_inputs(cmds[2][2]) == ["/tmp/a", "/tmp/b"]
    assert record_inputs(["report", "out/la", "--out", "x"]) == ["out/la"]


def scratch(tmp: Path) -> Path:
    """A working directory with the repository's inputs linked and a copy of reports/ (no images)."""
    work = tmp / "work"
    work.mkdir()
    for p in ROOT.iterdir():
        if p.name.startswith(".") or p.name in ("reports", "results", "out"):
            continue
        (work / p.name).symlink_to(p, target_is_directory=p.is_dir())
    if (ROOT / "reports").is_dir():
        shutil.copytree(ROOT / "reports", work / "reports", ignore=shutil.ignore_patterns("*.png", "*.pt"))
    return work


SHIM = ("import sys; sys.path.insert(0, {tests!r}); import tiny_nets; tiny_nets.apply_for_good(); "
        "from bench.cli import main; sys.exit(main(sys.argv[1:]))")


def run_bench(argv: list[str], env: dict, work: Path, monkeypatch) -> tuple[int, str]:
    """Exit status and output of one command: in this process, or in a subprocess when it loads plugins."""
    if "--plugin" in argv or "GUIDANCE_BENCH_PLUGINS" in env or any(t.endswith(".toml") for t in argv):
        proc = subprocess.run([sys.executable, "-c", SHIM.format(tests=str(ROOT / "tests")), *argv], cwd=work,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout + proc.stderr
    import torch

    from bench.cli import main

    threads = torch.get_num_threads()
    buf = io.StringIO()
    with monkeypatch.context() as m, contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        for k, v in env.items():
            m.setenv(k, v)
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: --help or a usage error
            rc = e.code if isinstance(e.code, int) else 1
        finally:
            torch.set_num_threads(threads)
    return rc, buf.getvalue()


@pytest.fixture
def tiny_networks(tmp_path_factory, monkeypatch):
    import tiny_nets
    from tasks import get_task

    get_task.cache_clear()
    tiny_nets.apply(monkeypatch, tmp_path_factory.getbasetemp() / "tiny-net-cache")
    yield
    get_task.cache_clear()


def test_readme_examples_run_as_written(tiny_networks, tmp_path, monkeypatch):
    cmds = commands(README.read_text(encoding="utf-8"))
    assert len(cmds) >= 15 and {subcommand(a) for _, _, a in cmds} >= {"run", "report", "suite", "compare"}
    work = scratch(tmp_path)
    (work / "tmp").mkdir()
    monkeypatch.chdir(work)
    from methods import REGISTRY
    from tasks import TASKS

    registries = (set(REGISTRY), set(TASKS))
    failures = []
    for line, env, argv in cmds:
        argv = tiny(argv, work / "tmp")
        for d in record_inputs(argv):
            if not (Path(d) / "records.jsonl").exists() and not Path(d).is_file():
                rc, out = run_bench(["run", "--method", "unguided", *TINY_RUN, "--out", d], {}, work, monkeypatch)
                assert rc == 0, out
        rc, out = run_bench(argv, env, work, monkeypatch)
        if rc != 0:
            tail = "\n    ".join(out.strip().splitlines()[-3:])
            failures.append(f"README.md:{line}: bench {shlex.join(argv)} -> exit {rc}\n    {tail}")
        assert (set(REGISTRY), set(TASKS)) == registries, f"README.md:{line} registered a plugin in this process"
    assert not failures, "\n".join(failures)
