"""Any PyTorch module as a jaxattack classifier, through a host callback.

    clf = models.from_torch(net, mean="cifar10", std="cifar10")   # NCHW, 0..1

The zero-dependency route (torch itself is the only requirement): the jitted attack
calls back into PyTorch on the host for every forward batch (``jax.pure_callback``'s
mechanism, without its copy to device 0, see :func:`host_call`). So there is no XLA fusion,
no accelerator and no sharding benefit: under ``shard_map`` every device's shard calls
the same host function. For speed export the model to ONNX and use
:func:`jaxattack.models.from_onnx`. The module is put in eval mode and runs under
``torch.inference_mode()``; pixels are normalised in JAX and handed over as float32.
"""

from __future__ import annotations

import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import checks, imported
from . import conventions as cv

_WARNED = False
_LOCK = threading.Lock()
HOST_WARNING = (
    "models.from_torch: the forward pass runs in PyTorch on the host through "
    "jax.pure_callback, so there is no XLA fusion, no accelerator and no sharding benefit; "
    "for speed export the model to ONNX (torch.onnx.export(..., dynamo=True)) and use "
    "models.from_onnx")


def _make_host_primitive():
    """A callback primitive whose host function gets XLA's numpy buffers directly.

    ``jax.pure_callback`` first ``device_put``s its arguments onto CPU device 0; under
    ``shard_map`` over several XLA:CPU devices, with arguments of ~100 KB and more, that
    copy waits for the devices that are themselves waiting for the callback, and the
    program hangs (jax 0.10.2; the engine's batches are MBs). This primitive lowers
    through the same ``emit_python_callback`` without that copy. ``None`` if JAX's
    internals moved: :func:`host_call` then falls back to ``jax.pure_callback``.
    """
    try:
        from jax._src import callback as jcb
        from jax._src import core as jcore
        from jax._src.interpreters import batching, mlir

        emit, op_sharding = jcb.emit_python_callback, jcb._callback_op_sharding
    except (ImportError, AttributeError):
        return None
    prim = jcore.Primitive("jaxattack_host_forward")

    def abstract(x, *, fn, k):
        return jcore.ShapedArray(x.shape[:-3] + k, jnp.float32)

    def impl(x, *, fn, k):
        return jnp.asarray(fn(np.asarray(x)), jnp.float32)

    def lower(ctx, x, *, fn, k):
        def callback(arr):
            return (np.asarray(fn(arr), np.float32),)

        sharding = op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
        out, _, _ = emit(ctx, callback, None, [x], ctx.avals_in, ctx.avals_out,
                         has_side_effect=False, returns_token=False, sharding=sharding)
        return out

    def batch(args, dims, *, fn, k):  # fn maps any leading axes
        (x,), (d,) = args, dims
        if d is None or isinstance(d, batching.NotMapped):
            return prim.bind(x, fn=fn, k=k), d
        return prim.bind(jnp.moveaxis(x, d, 0), fn=fn, k=k), 0

    prim.def_abstract_eval(abstract)
    prim.def_impl(impl)
    mlir.register_lowering(prim, lower, cacheable=False)
    batching.primitive_batchers[prim] = batch
    return prim


_HOST_P = _make_host_primitive()


def host_call(fn, x: jax.Array, k: int) -> jax.Array:
    """``fn(numpy float32[..., C, H, W]) -> [..., k]`` on the host, from traced code."""
    if _HOST_P is not None:
        return _HOST_P.bind(x, fn=fn, k=(int(k),))
    result = jax.ShapeDtypeStruct((*x.shape[:-3], int(k)), jnp.float32)
    return jax.pure_callback(fn, result, x, vmap_method="expand_dims")


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("from_torch needs PyTorch: pip install torch (a CPU build: "
                          "pip install torch==2.13.0 on these machines)") from e
    return torch


def warn_once():
    global _WARNED
    with _LOCK:
        if _WARNED:
            return
        _WARNED = True
    warnings.warn(HOST_WARNING, RuntimeWarning, stacklevel=3)


def from_torch(
    module,
    *,
    input_shape: tuple[int, int, int] | None = None,
    device=None,
    **options,
):
    """A ``torch.nn.Module`` (or any callable on torch tensors) as a :class:`Classifier`.

    Args:
      input_shape: ``(H, W, C)`` of the images (used by the checks and the attack's
        shape check); default: not declared, the checks use 32x32x3.
      device: the torch device to run on (default: that of the module's parameters).
      options: the options every importer takes (``input_scale``, ``mean``, ``std``,
        ``layout``, ``outputs``, ``num_classes``, ``class_names``, ``name``, ``check``,
        ``check_images``, ``check_labels``), documented at
        :class:`jaxattack.models.imported.Options`; here ``layout`` defaults to
        ``"NCHW"`` (PyTorch's convention; ``"auto"`` means it too), and PyTorch models
        usually want ``input_scale=1`` with the training set's ``mean``/``std``.
    """
    opts = imported.Options.parse("from_torch", options, layout="NCHW")
    torch = _import_torch()
    if not callable(module):
        raise TypeError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, torch.nn.Module):
        try:
            module.eval()
        except NotImplementedError:  # torch.export's module(): fixed at export time
            pass
        if device is None:
            first = next(iter(module.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device or "cpu")
    label = opts.name or type(module).__name__
    conv, hwc = imported.convention(opts, None, label, default="NCHW", input_shape=input_shape)

    def host(x: np.ndarray) -> np.ndarray:
        lead = x.shape[:-3]
        flat = np.require(x.reshape(-1, *x.shape[-3:]), np.float32, ["C", "W"])
        with torch.inference_mode():
            out = module(torch.from_numpy(flat).to(device))
        if isinstance(out, list | tuple):
            out = out[0]
        out = out.detach().float().cpu().numpy()
        return out.reshape(*lead, *out.shape[1:])

    with torch.inference_mode():  # the output size, from one image
        shape = hwc or (tuple(np.shape(opts.check_images)[1:])
                        if opts.check_images is not None else checks.DEFAULT_CHECK_SHAPE)
        probe = np.zeros((1, *shape), np.uint8)
        x0 = np.asarray(cv.preprocess(jnp.asarray(probe), conv))
        try:
            k_probe = host(x0).shape[-1]
        except Exception as e:
            hint = ""
            if conv.layout == "NHWC":
                hint = "; if the module expects channels-first input, pass layout='NCHW'"
            elif conv.layout == "NCHW":
                hint = "; if the module expects channels-last input, pass layout='NHWC'"
            raise cv.ConventionError(
                f"{label} failed on an image of shape {tuple(shape)} (H, W, C) fed as "
                f"{conv.layout} {list(x0.shape)}: {cv._first_line(e)}{hint}") from e
    k_out = int(k_probe)

    def build(c: cv.Convention, warn: bool = True):
        def apply_fn(params, images):
            if warn:  # once per process, when first traced
                warn_once()
            return host_call(host, cv.preprocess(images, c), k_out)

        return apply_fn

    return imported.finish(opts, build, {}, conv, label=label,
                           default_name=type(module).__name__, input_shape=hwc,
                           k_probed=k_out, check_build=lambda c: build(c, warn=False))
