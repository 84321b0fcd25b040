import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def subspace():
    from tasks import get_task

    return get_task("subspace", 200)


@pytest.fixture(scope="session")
def small_T_tasks():
    """Tasks on a short schedule for fast contract tests."""
    from tasks import get_task

    return {name: get_task(name, 20) for name in ("subspace", "sphere")}
