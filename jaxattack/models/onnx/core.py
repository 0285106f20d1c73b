"""The interpreter's values and op registry: a tensor while tracing (``V``), its layout
(ONNX or channels-last), the ``OPS`` table every op family registers into with ``@op``,
and the helpers the families share."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import conventions as cv

ONNX_EXTRA_HINT = 'pip install "jaxattack[onnx]"'
EXPORT_HINT = (
    "export from PyTorch with torch.onnx.export(model, (x,), path, dynamo=True, "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) (or the legacy exporter with "
    "nn.Flatten and dynamic_axes={'input': {0: 'batch'}}); the legacy exporter's "
    "x.view(x.size(0), -1) and a static batch size break other batch sizes in "
    "jaxonnxruntime (jaxattack's own interpreter handles both)")
TO_NCHW = (0, 3, 1, 2)  # NHWC array -> ONNX (NCHW) tensor
TO_NHWC = (0, 2, 3, 1)  # ONNX (NCHW) tensor -> NHWC array
NHWC_AXIS = (0, 3, 1, 2)  # ONNX axis -> axis of the NHWC array


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"from_onnx needs the onnx package: {ONNX_EXTRA_HINT}") from e
    return onnx


# ----------------------------------------------------------------------------- values


@dataclasses.dataclass
class V:
    """A tensor while interpreting: ``x`` is a numpy array (static: known while tracing,
    always in the ONNX layout) or a jax array; ``nhwc``: ``x`` holds the 4-D ONNX tensor
    transposed to channels-last."""

    x: Any
    nhwc: bool = False

    @property
    def static(self) -> bool:
        return isinstance(self.x, np.ndarray | np.generic)

    @property
    def shape(self) -> tuple[int, ...]:
        """The ONNX shape."""
        s = tuple(int(d) for d in np.shape(self.x))
        return (s[0], s[3], s[1], s[2]) if self.nhwc else s

    @property
    def ndim(self) -> int:
        return np.ndim(self.x)

    def onnx(self):
        """The array in the ONNX layout."""
        return jnp.transpose(self.x, TO_NCHW) if self.nhwc else self.x

    def as_nhwc(self):
        """A 4-D tensor as a channels-last array."""
        return self.x if self.nhwc else jnp.transpose(self.x, TO_NHWC)


def _xp(*vals):
    return np if all(v is None or v.static for v in vals) else jnp


def _np_dtype(onnx_type: int):
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


def _to_rank4(v: V):
    """An operand of an op on NHWC tensors, as a channels-last array (broadcast rules of
    the ONNX shape kept: a [C, 1, 1] constant becomes [1, 1, 1, C])."""
    if v.nhwc:
        return v.x
    s = v.shape
    arr = v.x.reshape((1,) * (4 - len(s)) + s) if len(s) < 4 else v.x
    return (np if v.static else jnp).transpose(arr, TO_NHWC)


# ----------------------------------------------------------------------------- the registry

OPS: dict[str, Any] = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn

    return deco


def _const(v: V) -> np.ndarray:
    if v is None:
        return None
    if not v.static:
        raise cv.ModelImportError(
            "a shape, axes or pads input of the ONNX graph depends on the data; jaxattack "
            f"needs it to be known while tracing ({EXPORT_HINT})")
    return np.asarray(v.x)


def _axes(ctx, node, ins, attrs, input_index=1):
    if len(ins) > input_index and ins[input_index] is not None:
        return [int(a) for a in _const(ins[input_index]).reshape(-1)]
    a = attrs.get("axes")
    return None if a is None else [int(i) for i in a]

