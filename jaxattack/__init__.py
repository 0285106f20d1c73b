"""jaxattack: batched few-pixel black-box attacks (Su, Vargas & Sakurai, 2019) in JAX.

The public submodules (``ja.models``, ``ja.data``, ``ja.sweep``, ``ja.report``,
``ja.strategies``, ...) load on first use, so ``import jaxattack as ja`` stays light.
"""

import importlib

from jaxattack.caches import clear_caches
from jaxattack.classifier import Classifier, predict
from jaxattack.pixels.result import AttackResult
from jaxattack.runs.attack import AttackConfig, attack
from jaxattack.runs.minimum_k import MinKResult, minimum_k

__version__ = "0.2.0"
# Public short names -> their modules (``ja.sweep`` is ``jaxattack.runs.sweep``).
SUBMODULES = {
    "codec": "strategies.codec", "data": "data", "de": "strategies.de",
    "distributed": "runs.distributed", "engine": "engine", "evaluation": "pixels.evaluation",
    "models": "models", "objective": "pixels.objective", "problems": "pixels.problems",
    "report": "reports.report", "robust": "runs.robust", "sharding": "engine.sharding",
    "stats": "pixels.stats", "store": "data.store", "strategies": "strategies",
    "sweep": "runs.sweep", "train": "train", "verify": "pixels.verify",
    # the folders themselves
    "pixels": "pixels", "programs": "programs", "reports": "reports", "runs": "runs",
    "sparse": "sparse",
}
__all__ = [
    "AttackConfig", "AttackResult", "Classifier", "MinKResult", "attack", "clear_caches",
    "minimum_k", "predict", "__version__", *SUBMODULES,
]


def __getattr__(name):
    if name in SUBMODULES:
        return importlib.import_module(f"jaxattack.{SUBMODULES[name]}")
    raise AttributeError(f"module 'jaxattack' has no attribute {name!r}")
