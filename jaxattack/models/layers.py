"""Building blocks shared by the zoo, tuned for XLA:CPU (the attack's forward pass)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxattack import sparse

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


def shifted_matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                        rhs_dilation=None, dimension_numbers=None,
                        feature_group_count=1, precision=None, **kw):
    """A drop-in for ``lax.conv_general_dilated`` (NHWC/HWIO, stride 1, SAME, no
    dilation or groups) as one matmul over the kh*kw shifted copies of the input.

    XLA:CPU's convolution is ~30x slower than this on tiny (2x2) feature maps; results
    agree within float32 rounding. Anything else falls back to the lax convolution.
    """
    kh, kw_, cin, cout = rhs.shape
    plain = (
        tuple(window_strides) == (1, 1)
        and padding == "SAME"
        and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
        and feature_group_count == 1
        and lhs.ndim == 4
    )
    if not plain:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kw)
    n, h, w, _ = lhs.shape
    ph, pw = (kh - 1) // 2, (kw_ - 1) // 2
    x = jnp.pad(lhs, ((0, 0), (ph, kh - 1 - ph), (pw, kw_ - 1 - pw), (0, 0)))
    cols = [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw_)]
    patches = jnp.concatenate(cols, axis=-1)  # [N, H, W, kh*kw*cin], HWI order
    return jnp.einsum("nhwk,ko->nhwo", patches, rhs.reshape(kh * kw_ * cin, cout),
                      precision=precision)


class ConvBN(nnx.Module):
    """kxk convolution without bias, BatchNorm, ReLU (``shifted``: as one matmul)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, kernel: int = 3,
                 stride: int = 1, relu: bool = True, shifted: bool = False,
                 padding: str = "SAME"):
        kw = {"conv_general_dilated": shifted_matmul_conv} if shifted else {}
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, use_bias=False,
                             padding=padding, rngs=rngs, **kw)
        self.bn = nnx.BatchNorm(cout, momentum=0.9, rngs=rngs)
        self.relu = relu

    def __call__(self, x):
        x = self.bn(self.conv(x))
        return jax.nn.relu(x) if self.relu else x

    def sparse_layers(self) -> list:
        out = [sparse.Conv.of(self.conv), sparse.BatchNorm.of(self.bn)]
        return out + [sparse.Relu()] if self.relu else out


def declared(*parts) -> list:
    """Flatten modules (their ``sparse_layers()``) and layers into one declared list."""
    out = []
    for p in parts:
        out += p.sparse_layers() if hasattr(p, "sparse_layers") else [p]
    return out
