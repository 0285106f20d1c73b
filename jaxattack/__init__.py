"""jaxattack: batched few-pixel black-box attacks (Su, Vargas & Sakurai, 2019) in JAX."""

from jaxattack.classifier import Classifier

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]
