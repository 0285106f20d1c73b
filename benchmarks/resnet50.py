"""A ResNet-50-shaped Flax NNX classifier for 224x224 RGB images, random weights.

    from resnet50 import classifier
    clf = classifier()          # jaxattack.Classifier, uint8 [N, 224, 224, 3] -> 1000 logits

He et al. (2016) with torchvision's layout (v1.5: the stride sits in the 3x3 conv of a
bottleneck): a 7x7/2 stem, a 3x3/2 max pool, [3, 4, 6, 3] bottlenecks of widths 64,
128, 256, 512 (x4 out), global average pool, a 1000-way dense layer; BatchNorm in eval
mode, ImageNet normalisation inside. 25.6M parameters, ~4.1 GMAC per image. For the
throughput and memory benchmarks only (benchmarks/throughput.py); the weights are an
initialisation, not a trained model.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # 0..255 scale
IMAGENET_STD = (58.395, 57.12, 57.375)
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride


def _conv(cin, cout, k, stride, rngs):
    pad = ((k // 2, k // 2),) * 2
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding=pad, use_bias=False, rngs=rngs)


class Bottleneck(nnx.Module):
    def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
        cout = 4 * width
        self.c1, self.b1 = _conv(cin, width, 1, 1, rngs), nnx.BatchNorm(width, rngs=rngs)
        self.c2, self.b2 = _conv(width, width, 3, stride, rngs), nnx.BatchNorm(width, rngs=rngs)
        self.c3, self.b3 = _conv(width, cout, 1, 1, rngs), nnx.BatchNorm(cout, rngs=rngs)
        project = stride != 1 or cin != cout  # a projection shortcut, else the identity
        self.proj = nnx.Sequential(_conv(cin, cout, 1, stride, rngs),
                                   nnx.BatchNorm(cout, rngs=rngs)) if project else None

    def __call__(self, x):
        y = nnx.relu(self.b1(self.c1(x)))
        y = nnx.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return nnx.relu(y + (x if self.proj is None else self.proj(x)))


class ResNet50(nnx.Module):
    def __init__(self, num_classes: int = 1000, *, rngs: nnx.Rngs):
        self.stem, self.bn = _conv(3, 64, 7, 2, rngs), nnx.BatchNorm(64, rngs=rngs)
        blocks, cin = [], 64
        for width, n, stride in STAGES:
            for i in range(n):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1, rngs=rngs))
                cin = 4 * width
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def __call__(self, images):
        x = (images.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / \
            jnp.asarray(IMAGENET_STD, jnp.float32)
        x = nnx.relu(self.bn(self.stem(x)))
        x = nnx.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((1, 2)))


def classifier(num_classes: int = 1000, seed: int = 0, size: int = 224, dtype=None):
    """The model as a jaxattack Classifier (eval mode, logits out; ``dtype``: compute
    dtype such as ``"bfloat16"``, parameters stay float32)."""
    from jaxattack import models

    module = ResNet50(num_classes, rngs=nnx.Rngs(seed))
    module.eval()
    if dtype is not None:
        models.set_compute_dtype(module, dtype)
    return models.from_module(module, num_classes, input_shape=(size, size, 3),
                              name=f"resnet50_{size}")
