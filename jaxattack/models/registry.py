"""The zoo: architecture constructors and the registry of shipped weight files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
from flax import nnx

from jaxattack.data.files import write_atomic

from .allcnn import AllCNNC
from .nin import NiN
from .resnet import resnet20
from .tiny import TinyCNN
from .vgg import vgg16
from .weights import WEIGHTS_DIR

REGISTRY_PATH = WEIGHTS_DIR / "registry.json"

# name -> (constructor(num_classes, rngs=...), one-line description)
ARCHITECTURES: dict[str, tuple[Callable[..., nnx.Module], str]] = {
    "tiny": (TinyCNN, "small VGG-style CNN, 5 conv + BN, the fast CPU default"),
    "resnet20": (resnet20, "ResNet-20 (He et al. 2016), option-A shortcuts"),
    "allcnn": (AllCNNC, "All-CNN-C (Springenberg et al. 2015) with BatchNorm"),
    "nin": (NiN, "Network in Network (Lin et al. 2014) with BatchNorm"),
    "vgg16": (vgg16, "VGG16 for 32x32 with BatchNorm, 512-wide classifier"),
}


def build(name: str, num_classes: int = 10, seed: int = 0) -> nnx.Module:
    """A freshly initialised model (train mode) of architecture ``name``."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name][0](num_classes, rngs=nnx.Rngs(seed))


def read_registry(path: str | os.PathLike = REGISTRY_PATH) -> dict[str, dict]:
    """The registry of shipped weights: name -> {file, sha256, test_accuracy, ...}."""
    path = Path(path)
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_entry(name: str, entry: dict, path: str | os.PathLike = REGISTRY_PATH) -> None:
    """Add or replace one model's entry, atomically, keeping names sorted."""
    path = Path(path)
    reg = read_registry(path)
    reg[name] = entry
    write_atomic(path, json.dumps(dict(sorted(reg.items())), indent=2) + "\n")


def model_card(reg: dict | None = None) -> str:
    """The model card as a markdown table (for docs/models.md and the README)."""
    reg = read_registry() if reg is None else reg
    rows = [
        "| model | architecture | params | clean test acc. (10k JPEG test set) | sample acc. "
        "| epochs | training time | hardware | weights (sha256) |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, (ctor, desc) in ARCHITECTURES.items():
        e = reg.get(name)
        n_params = sum(
            x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(
                lambda c=ctor: c(10, rngs=nnx.Rngs(0))), nnx.Param))
        )
        if e is None:
            rows.append(f"| `{name}` | {desc} | {n_params:,} | — | — | — | — | — "
                        "| no weights shipped yet |")
            continue
        minutes = e["train_seconds"] / 60
        rows.append(
            f"| `{name}` | {desc} | {n_params:,} | {100 * e['test_accuracy']:.2f}% "
            f"| {100 * e['sample_accuracy']:.1f}% | {e['epochs']} | {minutes:.0f} min "
            f"| {e['hardware']} | `{e['file']}` ({e['dtype']}) `{e['sha256']}` |"
        )
    return "\n".join(rows) + "\n"
