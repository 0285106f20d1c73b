"""``nin``: Network in Network (Lin et al. 2014) for CIFAR-10."""

from __future__ import annotations

from flax import nnx

from .layers import ConvBN, avg_pool2, global_avg_pool, max_pool2, normalize


class NiN(nnx.Module):
    """Three mlpconv blocks (kxk conv + two 1x1 convs) | global average pooling.

    As in the paper's CIFAR-10 model (192-160-96 | 192-192-192 | 192-192-classes), with
    BatchNorm, no dropout, and 2x2 pools in place of 3x3/2 (same output sizes);
    0.97M parameters.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        def mlpconv(cin, widths, k):
            a, b, c = widths
            return nnx.List([
                ConvBN(cin, a, kernel=k, rngs=rngs),
                ConvBN(a, b, kernel=1, rngs=rngs),
                ConvBN(b, c, kernel=1, rngs=rngs, relu=c != num_classes),
            ])

        self.block1 = mlpconv(3, (192, 160, 96), 5)
        self.block2 = mlpconv(96, (192, 192, 192), 5)
        self.block3 = mlpconv(192, (192, 192, num_classes), 3)

    def __call__(self, images):
        x = normalize(images)
        stages = ((self.block1, max_pool2), (self.block2, avg_pool2), (self.block3, None))
        for block, pool in stages:
            for layer in block:
                x = layer(x)
            x = pool(x) if pool else x
        return global_avg_pool(x)
