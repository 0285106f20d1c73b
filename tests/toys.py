"""Tiny classifiers with known answers, shared by the tests."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxattack as ja

# The planted pixel of `planted()`: only this pixel can change the decision.
PLANTED_X, PLANTED_Y = 5, 2


def planted(height=8, width=8, bias=3.0):
    """3 classes; always class 0 unless pixel (PLANTED_X, PLANTED_Y) gets a special colour.

    Class 1 needs R > 200 and G < 50 there; class 2 needs B > 220 and R < 40.
    """

    def apply_fn(params, x):
        px = x[:, PLANTED_Y, PLANTED_X].astype(jnp.float32)
        to1 = jax.nn.sigmoid((px[:, 0] - 200) / 8) * jax.nn.sigmoid((50 - px[:, 1]) / 8)
        to2 = jax.nn.sigmoid((px[:, 2] - 220) / 8) * jax.nn.sigmoid((40 - px[:, 0]) / 8)
        return params["bias"] + jnp.stack([jnp.zeros_like(to1), 8 * to1, 8 * to2], -1)

    return ja.Classifier.from_logits(apply_fn, {"bias": jnp.array([bias, 0.0, 0.0])}, 3,
                                     input_shape=(height, width, 3), name="planted")


class SmallCNN(nnx.Module):
    def __init__(self, num_classes, channels, rngs):
        self.conv1 = nnx.Conv(channels, 8, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(16, num_classes, rngs=rngs)

    def __call__(self, x):
        x = x.astype(jnp.float32) / 255.0 - 0.5
        x = nnx.relu(self.bn(self.conv1(x)))
        x = nnx.relu(self.conv2(x))
        return self.head(x.mean((1, 2))) * 4.0


def small_cnn(num_classes=10, channels=3, seed=0):
    """A random conv net in eval mode (any image size, any class count)."""
    model = SmallCNN(num_classes, channels, nnx.Rngs(seed))
    model.eval()
    graphdef, state = nnx.split(model)
    return ja.Classifier.from_logits(lambda p, x: nnx.merge(graphdef, p)(x), state,
                                     num_classes, name="small_cnn")


def random_images(n, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def linear(num_classes=10, height=8, width=8, channels=3, seed=0, scale=0.02):
    """A random linear classifier on the raw pixels: cheap to compile, and pixels of
    large weight move its decision (some images flip with one pixel, others need more)."""
    w = np.random.default_rng(seed).normal(0, scale, (height * width * channels, num_classes))

    def apply_fn(params, x):
        return x.reshape(x.shape[0], -1).astype(jnp.float32) @ params["w"]

    return ja.Classifier.from_logits(apply_fn, {"w": jnp.asarray(w, jnp.float32)}, num_classes,
                                     input_shape=(height, width, channels), name="linear")


def have(*mods) -> bool:
    """Whether every module named can be imported (for the optional extras' skips)."""
    return all(importlib.util.find_spec(m) is not None for m in mods)


def keras_on_jax() -> bool:
    """Keras 3 is installed and would run on the JAX backend."""
    if not have("keras"):
        return False
    import keras

    return keras.config.backend() == "jax"


def fast_only(cases, fast) -> list:
    """``parametrize`` cases where only those in ``fast`` run in the README's fast suite;
    the rest are marked slow (run with ``--all``: see conftest.py). A tuple case is
    several arguments."""
    return [pytest.param(*(c if isinstance(c, tuple) else (c,)),
                         marks=() if c in fast else pytest.mark.slow) for c in cases]
