"""``resnet20``: ResNet-20 for CIFAR-10 (He et al. 2016), option-A identity shortcuts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import ConvBN, global_avg_pool, normalize


class BasicBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = ConvBN(cin, cout, stride=stride, rngs=rngs)
        self.conv2 = ConvBN(cout, cout, relu=False, rngs=rngs)
        self.stride, self.pad = stride, cout - cin

    def __call__(self, x):
        short = x[:, :: self.stride, :: self.stride, :]
        if self.pad:  # option A: zero-padded channels, no parameters
            lo = self.pad // 2
            short = jnp.pad(short, ((0, 0), (0, 0), (0, 0), (lo, self.pad - lo)))
        return jax.nn.relu(self.conv2(self.conv1(x)) + short)


class ResNet(nnx.Module):
    """ResNet-(6n+2) with widths 16/32/64; n=3 gives ResNet-20 (0.27M parameters)."""

    def __init__(self, num_classes: int = 10, n: int = 3, *, rngs: nnx.Rngs):
        self.stem = ConvBN(3, 16, rngs=rngs)
        blocks, cin = [], 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage and i == 0 else 1, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(64, num_classes, rngs=rngs)

    def __call__(self, images):
        x = self.stem(normalize(images))
        for block in self.blocks:
            x = block(x)
        return self.head(global_avg_pool(x))


def resnet20(num_classes: int = 10, *, rngs: nnx.Rngs) -> ResNet:
    return ResNet(num_classes, n=3, rngs=rngs)
