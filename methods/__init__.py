"""Guidance methods behind one interface; see ``methods.base.Method`` and ``REGISTRY``.

Adding a method: one file with a frozen dataclass subclass of ``Method`` / ``PerStepMethod``, plus one
``register`` line below. The shared contract suite (tests/test_contract.py) then runs it.
"""
from .base import Method, Objective, PerStepMethod, StepCtx, param  # noqa: F401
from .denoiser import Cost, Counted  # noqa: F401
from .registry import REGISTRY, UnknownName, get_method, make_method, register, suggest  # noqa: F401
from .sampling import NoiseStream, Sampler, Schedule  # noqa: F401

from .unguided import Unguided
from .naive import Naive
from .lookahead import LookAhead

for _cls in (Unguided, Naive, LookAhead):
    register(_cls)
from .dno import DNO  # noqa: E402
from .doodl import DOODL  # noqa: E402

for _cls in (DNO, DOODL):
    register(_cls)
from .dps import DPS  # noqa: E402
from .mpgd import MPGD  # noqa: E402
from .universal import Universal  # noqa: E402
from .freedom import FreeDoM  # noqa: E402
from .polyak import Polyak  # noqa: E402
from .forward_only import ForwardOnly  # noqa: E402

for _cls in (DPS, MPGD, Universal, FreeDoM, Polyak, ForwardOnly):
    register(_cls)
from .best_of_n import BestOfN  # noqa: E402

register(BestOfN)
from .fk_steering import FKSteering  # noqa: E402
from .tds import TDS  # noqa: E402
from .svdd import SVDD  # noqa: E402

for _cls in (FKSteering, TDS, SVDD):
    register(_cls)
from .exact_guidance import ExactGuidance  # noqa: E402

register(ExactGuidance)
