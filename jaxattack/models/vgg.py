"""``vgg16``: VGG16 (Simonyan & Zisserman 2015) for 32x32 inputs, with BatchNorm."""

from __future__ import annotations

import jax
from flax import nnx

from .layers import ConvBN, max_pool2, normalize

# Convolution widths; "M" is a 2x2 max pool. The last block runs on 2x2 feature maps.
VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nnx.Module):
    """Conv-BN-ReLU stack from ``cfg`` | 512-unit hidden layer | classes.

    XLA:CPU's convolution is ~57x slower on the last block's 2x2 feature maps than
    im2col + one matmul; the attack computes those as that (``jaxattack.programs.convs``).
    """

    def __init__(self, num_classes: int = 10, cfg=VGG16, *, rngs: nnx.Rngs):
        convs, pool_after, cin, size = [], [], 3, 32
        for v in cfg:
            if v == "M":
                pool_after.append(len(convs) - 1)
                size //= 2
            else:
                convs.append(ConvBN(cin, v, rngs=rngs))
                cin = v
        self.convs = nnx.List(convs)
        self.pool_after = tuple(pool_after)  # static: index of the conv each pool follows
        self.fc = nnx.Linear(cin * size * size, 512, rngs=rngs)
        self.head = nnx.Linear(512, num_classes, rngs=rngs)

    def __call__(self, images):
        x = normalize(images)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i in self.pool_after:
                x = max_pool2(x)
        x = x.reshape(x.shape[0], -1)
        return self.head(jax.nn.relu(self.fc(x)))


def vgg16(num_classes: int = 10, *, rngs: nnx.Rngs) -> VGG:
    return VGG(num_classes, VGG16, rngs=rngs)
