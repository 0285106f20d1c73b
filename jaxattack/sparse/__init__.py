"""The sparse forward pass: recompute only what the k changed pixels can reach.

A classifier whose network is declared as layers (``Classifier.layers``; a module's
``sparse_layers()``, see docs/sparse.md) gets a :class:`Plan`: the clean image's
activations are cached once per problem, each candidate recomputes a window per pixel
and layer up to a handover layer picked by a cost model, and the rest runs dense.
The probabilities equal the dense forward's to float rounding (tested per zoo model).
"""

from jaxattack.sparse.layers import (
    Act,
    AvgPool,
    BatchNorm,
    Conv,
    Head,
    MaxPool,
    Normalize,
    PadChannels,
    Relu,
    Residual,
    Subsample,
)
from jaxattack.sparse.plan import Plan, plan, why_not

__all__ = ["Act", "AvgPool", "BatchNorm", "Conv", "Head", "MaxPool", "Normalize",
           "PadChannels", "Plan", "Relu", "Residual", "Subsample", "plan", "why_not"]
