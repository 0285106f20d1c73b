"""Building blocks shared by the zoo, tuned for XLA:CPU (the attack's forward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# CIFAR-10 per-channel statistics on the 0..255 scale (training set).
CIFAR10_MEAN = (125.31, 122.95, 113.87)
CIFAR10_STD = (62.99, 62.09, 66.70)


def normalize(images: jax.Array, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> jax.Array:
    """uint8 (or float 0..255) NHWC images -> float32 standardised per channel."""
    x = images.astype(jnp.float32)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def max_pool2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max pool by reshape (its backward is ~3x faster than reduce_window)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def avg_pool2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 average pool by reshape."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def global_avg_pool(x: jax.Array) -> jax.Array:
    return x.mean(axis=(1, 2))


class ConvBN(nnx.Module):
    """kxk convolution without bias, BatchNorm, ReLU. Plain ``nnx.Conv``: the attack
    computes it in the fastest form for the platform (``jaxattack.programs.convs``)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, kernel: int = 3,
                 stride: int = 1, relu: bool = True, padding: str = "SAME"):
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, use_bias=False,
                             padding=padding, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
        self.relu = relu

    def __call__(self, x):
        x = self.bn(self.conv(x))
        return jax.nn.relu(x) if self.relu else x
