"""Convolutions in the forms XLA:CPU runs fast, and the lowering that gives them to any model.

``conv(x, w, ...)`` computes a 2-D convolution (NHWC input, HWIO kernel, explicit
padding) in the form ``form(...)`` picks for the platform and shape. On XLA:CPU
(jax 0.10.2, the 2-core AMD EPYC VM, ``benchmarks/convs.py``):

- a **depthwise** convolution (one input channel per group) as one multiply-add per
  kernel tap over shifted views: 5.5-38x faster than XLA's grouped convolution on every
  depthwise shape of EfficientNet-Lite0, and bit-identical there;
- a **grouped** convolution as one dense convolution per group, concatenated: 3-9x
  faster (2-8 groups of 8-32 channels);
- a **1x1** convolution (stride 1, no padding) as a matmul over channels: 1.2-4x;
- a convolution whose output map is at most 2x2 as im2col plus one matmul (57x for a
  3x3 convolution of 512 channels on 2x2 maps; at 4x4 XLA's own is 1.6x faster).

Other platforms keep XLA's convolution (``FAST_FORMS``): not measured there yet
(``benchmarks/gpu_run.sh`` times EfficientNet-Lite0 both ways). The results equal
XLA's convolution to float rounding (tests/test_convs.py).

``lowered(apply_fn)`` replays a model's jaxpr with every ``conv_general_dilated`` that
has a faster form computed in it, whatever framework wrote the model (Flax, Keras,
tf2jax, the ONNX interpreter); a model with none runs unchanged. ``Classifier.probs``
applies it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxattack.programs import jaxprs

# The platforms on which the fast forms replace XLA's convolution.
FAST_FORMS = {"cpu": True}
# Output maps at most this large (both sides) run as im2col + matmul on those platforms.
IM2COL_MAX_MAP = 2


def form(x_shape, w_shape, strides, padding, dilation=(1, 1), groups: int = 1,
         platform: str | None = None) -> str:
    """How ``conv`` computes: "depthwise", "grouped", "matmul", "im2col" or "xla"."""
    platform = platform or jax.default_backend()
    if not FAST_FORMS.get(platform, False):
        return "xla"
    kh, kw, cin_g, cout = w_shape
    if groups > 1:
        return "depthwise" if cin_g == 1 else "grouped"
    if (kh, kw) == (1, 1) and tuple(strides) == (1, 1) and not np.any(padding):
        return "matmul"
    h, w = out_size(x_shape[-3:-1], w_shape[:2], strides, padding, dilation)
    if max(h, w) <= IM2COL_MAX_MAP and tuple(dilation) == (1, 1):
        return "im2col"
    return "xla"


def out_size(hw, kernel, strides, padding, dilation=(1, 1)) -> tuple[int, int]:
    return tuple((hw[a] + padding[a][0] + padding[a][1] - (kernel[a] - 1) * dilation[a] - 1)
                 // strides[a] + 1 for a in (0, 1))


def conv(x, w, strides=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups: int = 1,
         precision=None, preferred_element_type=None, how: str | None = None):
    """The convolution of ``x`` ``[N, H, W, Cin]`` (or ``[H, W, Cin]``) by the HWIO kernel
    ``w`` ``[kh, kw, Cin / groups, Cout]``: ``lax.conv_general_dilated``'s result, in
    the form ``how`` (default: ``form``'s choice)."""
    if x.ndim == 3:
        return conv(x[None], w, strides, padding, dilation, groups, precision,
                    preferred_element_type, how)[0]
    strides, dilation = tuple(strides), tuple(dilation)
    padding = tuple(tuple(int(v) for v in p) for p in padding)
    how = how or form(x.shape, w.shape, strides, padding, dilation, groups)
    kw = {"precision": precision, "preferred_element_type": preferred_element_type}
    if how == "xla":
        return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=groups, **kw)
    if how == "depthwise":
        return _depthwise(x, w, strides, padding, dilation, preferred_element_type)
    if how == "grouped":
        cin, cout = x.shape[-1] // groups, w.shape[-1] // groups
        return jnp.concatenate(
            [conv(x[..., g * cin:(g + 1) * cin], w[..., g * cout:(g + 1) * cout], strides,
                  padding, dilation, 1, precision, preferred_element_type)
             for g in range(groups)], axis=-1)
    if how == "matmul":
        return jnp.einsum("nhwc,co->nhwo", x, w[0, 0], **kw)
    if how == "im2col":
        return im2col(lax.pad(x, jnp.zeros((), x.dtype), _pads(padding)), w, strides, **kw)
    raise ValueError(f"unknown convolution form {how!r}")


def _pads(padding):
    return ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0))


def im2col(x, w, strides=(1, 1), precision=None, preferred_element_type=None):
    """A VALID convolution of ``x`` ``[..., H, W, Cin]`` (already padded) as the
    concatenation of its ``kh * kw`` shifted views and one matmul."""
    kh, kw, cin, cout = w.shape
    sh, sw = strides
    h = (x.shape[-3] - kh) // sh + 1
    wd = (x.shape[-2] - kw) // sw + 1
    if kh == kw == 1:
        patches = x[..., : (h - 1) * sh + 1: sh, : (wd - 1) * sw + 1: sw, :]
    else:
        patches = jnp.concatenate(
            [x[..., i: i + (h - 1) * sh + 1: sh, j: j + (wd - 1) * sw + 1: sw, :]
             for i in range(kh) for j in range(kw)], axis=-1)  # HWI order
    return jnp.einsum("...k,ko->...o", patches, w.reshape(kh * kw * cin, cout),
                      precision=precision, preferred_element_type=preferred_element_type)


def _depthwise(x, w, strides, padding, dilation, preferred_element_type=None):
    """One input channel per group (``Cout = m * Cin``): a multiply-add per kernel tap."""
    kh, kw, _, cout = w.shape
    m = cout // x.shape[-1]
    if m > 1:  # output channel o reads input channel o // m
        x = jnp.repeat(x, m, axis=-1)
    dt = preferred_element_type or jnp.result_type(x.dtype, w.dtype)
    x = lax.pad(x, jnp.zeros((), x.dtype), _pads(padding)).astype(dt)
    w = w.astype(dt)
    (sh, sw), (dh, dw) = strides, dilation
    h = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    wd = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = None
    for a in range(kh):
        for b in range(kw):
            tap = x[:, a * dh: a * dh + (h - 1) * sh + 1: sh,
                    b * dw: b * dw + (wd - 1) * sw + 1: sw, :] * w[a, b, 0]
            out = tap if out is None else out + tap
    return out


# ---- the lowering of a model's own convolutions ---------------------------------------

def _spec(dn):
    """(lhs to NHWC, rhs to HWIO, NHWC to out) permutations of conv dimension numbers."""
    lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    return ((lhs[0], lhs[2], lhs[3], lhs[1]), (rhs[2], rhs[3], rhs[1], rhs[0]),
            tuple(np.argsort((out[0], out[2], out[3], out[1]))))


def conv_params(lhs_shape, rhs_shape, params) -> dict | None:
    """A 2-D ``conv_general_dilated`` equation's settings in ``conv``'s terms (NHWC,
    HWIO), or None where ``conv`` cannot compute it (input dilation, batch groups,
    other ranks)."""
    dn = params["dimension_numbers"]
    if (len(lhs_shape) != 4 or params["batch_group_count"] != 1
            or tuple(params["lhs_dilation"]) != (1, 1)):
        return None
    to_nhwc, to_hwio, from_nhwc = _spec(dn)
    return {"x_shape": tuple(lhs_shape[i] for i in to_nhwc),
            "w_shape": tuple(rhs_shape[i] for i in to_hwio),
            "strides": tuple(params["window_strides"]),
            "padding": tuple(tuple(p) for p in params["padding"]),
            "dilation": tuple(params["rhs_dilation"]),
            "groups": params["feature_group_count"],
            "perms": (to_nhwc, to_hwio, from_nhwc)}


def _fast(lhs_shape, rhs_shape, params) -> str:
    p = conv_params(lhs_shape, rhs_shape, params)
    if p is None:
        return "xla"
    return form(p["x_shape"], p["w_shape"], p["strides"], p["padding"], p["dilation"],
                p["groups"])


def conv_rule(lhs, rhs, **params):
    """``conv_general_dilated`` in its fast form where it has one, else as it is."""
    how = _fast(lhs.shape, rhs.shape, params)
    if how == "xla":
        return lax.conv_general_dilated_p.bind(lhs, rhs, **params)
    p = conv_params(lhs.shape, rhs.shape, params)
    to_nhwc, to_hwio, from_nhwc = p["perms"]
    y = conv(jnp.transpose(lhs, to_nhwc), jnp.transpose(rhs, to_hwio), p["strides"],
             p["padding"], p["dilation"], p["groups"], params["precision"],
             params["preferred_element_type"], how)
    return jnp.transpose(y, from_nhwc)


def has_fast_convs(program: jaxprs.Program) -> bool:
    """Whether some convolution of ``program`` has a faster form on this platform."""
    return any(e.name == "conv_general_dilated"
               and _fast(program.shape(e.ins[0]), program.shape(e.ins[1]), e.params) != "xla"
               for e in program.eqns)


def lowered(apply_fn):
    """``apply_fn`` with its convolutions in their fast forms (see the module docstring)."""
    return jaxprs.replayed(apply_fn, {"conv_general_dilated": conv_rule}, has_fast_convs)
