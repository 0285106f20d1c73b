"""``tiny``: a small VGG-style CNN (~0.29M parameters), the fast CPU default."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from .layers import ConvBN, global_avg_pool, max_pool2, normalize


class TinyCNN(nnx.Module):
    """conv32 | pool | conv64 x2 | pool | conv128 x2 | pool | global avg | dense."""

    def __init__(self, num_classes: int = 10, widths=(32, 64, 128), *, rngs: nnx.Rngs):
        a, b, c = widths
        self.stem = ConvBN(3, a, rngs=rngs)
        self.block1 = nnx.List([ConvBN(a, b, rngs=rngs), ConvBN(b, b, rngs=rngs)])
        self.block2 = nnx.List([ConvBN(b, c, rngs=rngs), ConvBN(c, c, rngs=rngs)])
        self.head = nnx.Linear(c, num_classes, rngs=rngs)

    def __call__(self, images) -> jnp.ndarray:
        x = max_pool2(self.stem(normalize(images)))
        for layer in self.block1:
            x = layer(x)
        x = max_pool2(x)
        for layer in self.block2:
            x = layer(x)
        x = max_pool2(x)
        return self.head(global_avg_pool(x))
