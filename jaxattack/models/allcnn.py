"""``allcnn``: All-CNN-C (Springenberg et al. 2015), strided convs instead of pooling."""

from __future__ import annotations

from flax import nnx

from .layers import ConvBN, global_avg_pool, normalize


class AllCNNC(nnx.Module):
    """96-96-96/2 | 192-192-192/2 | 192 (3x3 valid) - 192 (1x1) - classes (1x1) | avg.

    As in the paper but with BatchNorm after every convolution and no dropout
    (BatchNorm trains it in far fewer epochs); 1.37M parameters.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        spec = [  # (cin, cout, kernel, stride, padding)
            (3, 96, 3, 1, "SAME"), (96, 96, 3, 1, "SAME"), (96, 96, 3, 2, "SAME"),
            (96, 192, 3, 1, "SAME"), (192, 192, 3, 1, "SAME"), (192, 192, 3, 2, "SAME"),
            (192, 192, 3, 1, "VALID"), (192, 192, 1, 1, "SAME"),
        ]  # fmt: skip
        self.layers = nnx.List([
            ConvBN(i, o, kernel=k, stride=s, padding=p, rngs=rngs) for i, o, k, s, p in spec
        ])
        self.classifier = ConvBN(192, num_classes, kernel=1, relu=False, rngs=rngs)

    def __call__(self, images):
        x = normalize(images)
        for layer in self.layers:
            x = layer(x)
        return global_avg_pool(self.classifier(x))
