"""jaxattack: batched few-pixel black-box attacks (Su, Vargas & Sakurai, 2019) in JAX.

The public submodules (``ja.models``, ``ja.data``, ``ja.sweep``, ``ja.report``,
``ja.strategies``, ...) load on first use, so ``import jaxattack as ja`` stays light.
"""

import importlib

from jaxattack.attack import AttackConfig, attack
from jaxattack.caches import clear_caches
from jaxattack.classifier import Classifier, predict
from jaxattack.minimum_k import MinKResult, minimum_k
from jaxattack.result import AttackResult

__version__ = "0.2.0"
SUBMODULES = ("codec", "data", "de", "distributed", "engine", "evaluation", "models",
              "objective", "problems", "report", "robust", "sharding", "stats", "store",
              "strategies", "sweep", "train", "verify")
__all__ = [
    "AttackConfig", "AttackResult", "Classifier", "MinKResult", "attack", "clear_caches",
    "minimum_k", "predict", "__version__", *SUBMODULES,
]


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"jaxattack.{name}")
    raise AttributeError(f"module 'jaxattack' has no attribute {name!r}")
