"""Registry of issue-specific report figures/tables, called by ``bench report`` when a suite asks for them.

A figure is ``fn(df: pandas.DataFrame, out: pathlib.Path) -> list[tuple[str, pathlib.Path | str]]``:
it gets every record (as ``bench.report.frame`` builds it) and returns (title, PNG path or Markdown text)
pairs that the report appends. Register with ``@figure("name")`` in a module imported below; a suite lists
the figures it wants (``figures = ["name", ...]``) and the report records that list in ``figures.json``.
"""
from __future__ import annotations

from typing import Callable

FIGURES: dict[str, Callable] = {}


def figure(name: str):
    def deco(fn):
        FIGURES[name] = fn
        return fn
    return deco


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: only reports need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_all() -> dict[str, Callable]:
    """Import the modules that register figures (kept lazy: matplotlib is only needed for reports)."""
    import importlib

    for mod in ("bench.figures_core", "bench.figures_dno", "bench.figures_toolbox", "bench.figures_digits",
                "bench.figures_mnist", "bench.figures_scaling"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return FIGURES
