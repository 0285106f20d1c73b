"""The convolution forms of ``jaxattack.programs.convs`` against XLA's own, per shape, and a small
NNX model with grouped convolutions against its own dense-convolution form.

    python benchmarks/convs.py --out benchmarks/results/convs_cpu

1. Per shape (EfficientNet-Lite0's depthwise convolutions at 224 x 224, grouped, 1x1
   and 2x2-map convolutions): XLA's ``conv_general_dilated`` and the form ``convs.form``
   picks, alternated, best of ``--reps``, and their largest difference relative to the
   largest output.
2. A small Flax NNX CIFAR model whose convolutions are grouped (4 groups) and depthwise,
   through ``Classifier.probs`` with the lowering (default) and without it
   (``lower=False``), against the same network written with dense convolutions whose
   kernels are block-diagonal (the same function, ``groups`` times the arithmetic).

Results name the machine.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
from common import best_of, machine, parser, write_outputs
from flax import nnx
from jax import lax

from jaxattack import models
from jaxattack.programs import convs

DN = ("NHWC", "HWIO", "NHWC")
# (batch, map, cin, cout, kernel, stride, groups): EfficientNet-Lite0's depthwise
# convolutions at 224 (batch 16), grouped and 1x1 convolutions, a 3x3 on 2x2 maps.
SHAPES = [
    (16, 112, 32, 32, 3, 1, 32), (16, 112, 96, 96, 3, 2, 96), (16, 56, 144, 144, 3, 1, 144),
    (16, 56, 144, 144, 5, 2, 144), (16, 28, 240, 240, 5, 1, 240),
    (16, 28, 240, 240, 3, 2, 240), (16, 14, 480, 480, 3, 1, 480),
    (16, 14, 672, 672, 5, 1, 672), (16, 7, 1152, 1152, 5, 1, 1152),
    (400, 32, 32, 32, 3, 1, 4), (400, 16, 64, 64, 3, 1, 4), (400, 16, 64, 64, 3, 1, 8),
    (400, 8, 128, 128, 3, 1, 4), (400, 16, 64, 64, 3, 1, 2),
    (64, 112, 16, 96, 1, 1, 1), (64, 56, 24, 144, 1, 1, 1), (64, 14, 80, 480, 1, 1, 1),
    (64, 7, 320, 1280, 1, 1, 1),
    (400, 2, 512, 512, 3, 1, 1), (400, 4, 512, 512, 3, 1, 1),
]


def shape_rows(reps: int) -> list[dict]:
    rows, rng = [], np.random.default_rng(0)
    for n, hw, cin, cout, k, s, g in SHAPES:
        x = jnp.asarray(rng.standard_normal((n, hw, hw, cin)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, cin // g, cout)), jnp.float32)
        pad = tuple(tuple(p) for p in lax.padtype_to_pads((hw, hw), (k, k), (s, s), "SAME"))
        form = convs.form(x.shape, w.shape, (s, s), pad, (1, 1), g)
        xla = jax.jit(lambda x, w, s=s, pad=pad, g=g: lax.conv_general_dilated(
            x, w, (s, s), pad, dimension_numbers=DN, feature_group_count=g))
        fast = jax.jit(functools.partial(convs.conv, strides=(s, s), padding=pad, groups=g,
                                         how=form))
        t = best_of({"xla": functools.partial(xla, x, w),
                     "fast": functools.partial(fast, x, w)}, reps)
        ref = xla(x, w)
        err = float(jnp.abs(fast(x, w) - ref).max() / jnp.abs(ref).max())
        rows.append({"batch": n, "map": hw, "cin": cin, "cout": cout, "kernel": k,
                     "stride": s, "groups": g, "form": form, "xla_ms": 1e3 * t["xla"],
                     "fast_ms": 1e3 * t["fast"], "speedup": t["xla"] / t["fast"],
                     "rel_err": err})
        print(json.dumps(rows[-1]), flush=True)
    return rows


class Grouped(nnx.Module):
    """conv 3->32 | grouped 32->64 (4 groups) | pool | depthwise 64 | grouped 64->128 (4)
    | pool | depthwise 128 | 1x1 128->128 | global pool | dense. ``dense``: every grouped
    convolution as a dense one with a block-diagonal kernel."""

    def __init__(self, dense: bool = False, seed: int = 0):
        rngs = nnx.Rngs(seed)
        spec = [(3, 32, 1), (32, 64, 4), (64, 64, 64), (64, 128, 4), (128, 128, 128),
                (128, 128, 1)]
        self.dense = dense
        self.convs = nnx.List([
            nnx.Conv(i, o, (1, 1) if j == 5 else (3, 3), feature_group_count=1 if dense
                     else g, rngs=rngs) for j, (i, o, g) in enumerate(spec)])
        self.groups = tuple(g for _, _, g in spec)
        self.head = nnx.Linear(128, 10, rngs=rngs)

    def __call__(self, images):
        x = images.astype(jnp.float32) / 127.5 - 1
        for j, c in enumerate(self.convs):
            x = jax.nn.relu(c(x))
            if j in (1, 3):
                x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(x.mean((1, 2)))

    def as_dense(self) -> Grouped:
        """The same function with block-diagonal dense kernels."""
        other = Grouped(dense=True)
        for a, b, g in zip(self.convs, other.convs, self.groups, strict=True):
            k = a.kernel[...]
            kh, kw, ci, co = k.shape
            full = np.zeros((kh, kw, ci * g, co), np.float32)
            per = co // g
            for i in range(g):
                full[:, :, i * ci:(i + 1) * ci, i * per:(i + 1) * per] = k[..., i * per:(i + 1)
                                                                           * per]
            b.kernel[...] = jnp.asarray(full)
            b.bias[...] = a.bias[...]
        other.head.kernel[...], other.head.bias[...] = self.head.kernel[...], self.head.bias[...]
        return other


def model_rows(reps: int, batch: int) -> dict:
    net = Grouped()
    grouped = models.from_module(net, 10, input_shape=(32, 32, 3), name="grouped")
    dense = models.from_module(net.as_dense(), 10, input_shape=(32, 32, 3), name="dense")
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)), jnp.uint8)
    variants = {"grouped, lowered (jaxattack)": grouped,
                "grouped, XLA's convolutions": grouped.replace(lower=False),
                "dense form, lowered": dense, "dense form, XLA's convolutions":
                    dense.replace(lower=False)}
    fns, outs = {}, {}
    for name, c in variants.items():
        f = jax.jit(c.probs)
        outs[name] = np.asarray(f(c.params, x))
        fns[name] = functools.partial(f, c.params, x)
    t = best_of(fns, reps)
    ref = outs["grouped, XLA's convolutions"]
    return {"batch": batch, "seconds": t, "images_per_s": {k: batch / v for k, v in t.items()},
            "max_prob_diff": {k: float(np.abs(v - ref).max()) for k, v in outs.items()},
            "lowered_vs_dense_form": t["dense form, XLA's convolutions"]
            / t["grouped, lowered (jaxattack)"]}


def main(argv=None):
    args = parser(__doc__, reps=5, batch=400, out=None).parse_args(argv)
    result = {"machine": machine(), "platform": jax.default_backend(),
              "shapes": shape_rows(args.reps), "model": model_rows(args.reps, args.batch)}
    lines = [f"Machine: {result['machine']}", "",
             "| batch | map | cin → cout | kernel, stride | groups | form | XLA ms | form ms "
             "| speed-up | rel. diff |", "|---:|---:|---|---|---:|---|---:|---:|---:|---:|"]
    for r in result["shapes"]:
        lines.append(f"| {r['batch']} | {r['map']} | {r['cin']} → {r['cout']} | "
                     f"{r['kernel']}x{r['kernel']}, {r['stride']} | {r['groups']} | {r['form']} "
                     f"| {r['xla_ms']:.1f} | {r['fast_ms']:.1f} | {r['speedup']:.1f}x | "
                     f"{r['rel_err']:.1e} |")
    m = result["model"]
    lines += ["", f"NNX model with grouped convolutions, batch {m['batch']}:", "",
              "| forward | s | images/s | max prob. diff |", "|---|---:|---:|---:|"]
    for k, v in m["seconds"].items():
        lines.append(f"| {k} | {v:.3f} | {m['images_per_s'][k]:,.0f} | "
                     f"{m['max_prob_diff'][k]:.1e} |")
    lines.append(f"\nLowered grouped model vs its dense-convolution form: "
                 f"{m['lowered_vs_dense_form']:.2f}x")
    write_outputs(args.out, result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
