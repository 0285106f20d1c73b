"""jaxattack: batched few-pixel black-box attacks (Su, Vargas & Sakurai, 2019) in JAX."""

from jaxattack.attack import AttackConfig, attack
from jaxattack.classifier import Classifier
from jaxattack.minimum_k import MinKResult, minimum_k
from jaxattack.result import AttackResult

__version__ = "0.1.0"
__all__ = [
    "AttackConfig", "AttackResult", "Classifier", "MinKResult", "attack", "minimum_k",
    "__version__",
]
