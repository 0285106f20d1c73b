"""A PyTorch port of the zoo's ``tiny`` model (``jaxattack/models/tiny.py::TinyCNN``).

    from jaxattack import models
    from torch_port import port_tiny            # with benchmarks/ on sys.path
    clf = models.load("tiny")
    net = port_tiny(clf.params)               # float NCHW on the 0..255 scale -> logits
    net01 = port_tiny(clf.params, scale=255)  # float NCHW in [0, 1] (torchattacks)

What is carried over exactly:

* kernels HWIO -> OIHW, the dense kernel [in, out] -> weight [out, in];
* BatchNorm in eval mode with the running mean/var and Flax's epsilon;
* Flax ``SAME`` padding as ``lax`` computes it: total ``max((ceil(n/s)-1)*s + k - n, 0)``,
  ``total // 2`` before and the rest after (asymmetric for even totals, e.g. a stride-2
  3x3 conv on an even size pads 0 before and 1 after; TinyCNN's stride-1 3x3 convs pad
  1 on each side, what ``nn.Conv2d(padding=1)`` does);
* the 2x2 reshape max pool (= ``nn.MaxPool2d(2)`` on even sizes) and the global mean;
* the normalisation by the CIFAR-10 mean/std on the 0..255 scale, inside the model.

Inputs are float NCHW; ``scale`` multiplies them onto the 0..255 scale first (1 for
0..255 inputs, 255 for [0, 1] inputs). ``to_nchw_float`` turns uint8 NHWC into that.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxattack.models.layers import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["ConvBN", "TinyTorch", "port_tiny", "same_padding", "to_nchw_float"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` padding of one spatial axis, as ``lax.padtype_to_pads`` SAME."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias, Flax SAME padding) + BatchNorm (eval) + optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1,
                 relu: bool = True, eps: float = 1e-5, padding: str = "SAME"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.kernel, self.stride, self.relu, self.same = kernel, stride, relu, padding == "SAME"

    def forward(self, x):
        if self.same:
            top, bottom = same_padding(x.shape[-2], self.kernel, self.stride)
            left, right = same_padding(x.shape[-1], self.kernel, self.stride)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class TinyTorch(nn.Module):
    """conv32 | pool | conv64 x2 | pool | conv128 x2 | pool | global avg | dense."""

    def __init__(self, num_classes: int = 10, widths=(32, 64, 128), scale: float = 1.0,
                 eps: float = 1e-5):
        super().__init__()
        a, b, c = widths
        self.stem = ConvBN(3, a, eps=eps)
        self.block1 = nn.ModuleList([ConvBN(a, b, eps=eps), ConvBN(b, b, eps=eps)])
        self.block2 = nn.ModuleList([ConvBN(b, c, eps=eps), ConvBN(c, c, eps=eps)])
        self.head = nn.Linear(c, num_classes)
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN, dtype=torch.float32)
                             .view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD, dtype=torch.float32)
                             .view(1, 3, 1, 1))

    def forward(self, x):
        x = x.to(torch.float32)
        if self.scale != 1.0:
            x = x * self.scale
        x = (x - self.mean) / self.std
        x = F.max_pool2d(self.stem(x), 2)
        for layer in self.block1:
            x = layer(x)
        x = F.max_pool2d(x, 2)
        for layer in self.block2:
            x = layer(x)
        x = F.max_pool2d(x, 2)
        return self.head(x.mean(dim=(2, 3)))


def _pure(params) -> dict:
    """An nnx State (or a nested dict of arrays / Variables) as nested numpy dicts."""
    from flax import nnx

    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)

    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return np.asarray(v.get_value() if hasattr(v, "get_value") else v)

    return conv(dict(params))


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))  # a writable copy


def _load_convbn(mod: ConvBN, p: dict) -> None:
    mod.conv.weight.data.copy_(_t(np.transpose(p["conv"]["kernel"], (3, 2, 0, 1))))  # HWIO->OIHW
    bn = p["bn"]
    mod.bn.weight.data.copy_(_t(bn["scale"]))
    mod.bn.bias.data.copy_(_t(bn["bias"]))
    mod.bn.running_mean.copy_(_t(bn["mean"]))
    mod.bn.running_var.copy_(_t(bn["var"]))


def port_tiny(params, scale: float = 1.0, eps: float = 1e-5) -> TinyTorch:
    """A ``TinyTorch`` in eval mode carrying the Flax ``TinyCNN`` params (an nnx State).

    ``eps`` must be the Flax BatchNorm epsilon (``nnx.BatchNorm`` default 1e-5).
    """
    p = _pure(params)
    widths = tuple(int(p[k][0]["conv"]["kernel"].shape[-1]) if k != "stem"
                   else int(p[k]["conv"]["kernel"].shape[-1]) for k in ("stem", "block1", "block2"))
    num_classes = int(p["head"]["kernel"].shape[-1])
    net = TinyTorch(num_classes, widths, scale=scale, eps=eps)
    with torch.no_grad():
        _load_convbn(net.stem, p["stem"])
        for name in ("block1", "block2"):
            block = p[name]
            for i, mod in enumerate(getattr(net, name)):
                _load_convbn(mod, block[i] if i in block else block[str(i)])
        net.head.weight.copy_(_t(p["head"]["kernel"].T))
        net.head.bias.copy_(_t(p["head"]["bias"]))
    return net.eval()


def to_nchw_float(images: np.ndarray, scale: float = 1.0) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW tensor, divided by ``scale`` (255 for [0, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))
    x = x.to(torch.float32)
    return x / scale if scale != 1.0 else x
