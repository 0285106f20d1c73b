"""Image data sources -> ``(uint8 NHWC images, int64 labels, class_names)`` numpy arrays.

Sources accepted by :func:`load`:

* ``"sample"``: the built-in sample shipped in the package (the first 100 CIFAR-10
  test JPEGs of each class, 1,000 images); needs no data on disk.
* a folder ``ROOT`` holding ``ROOT/<split>/<label>/*.{jpg,jpeg,png}``;
* a tar file ``X.tar`` holding ``<split>/<label>/*.{jpg,jpeg,png}`` members;
* a folder holding ``<split>.tar`` files (e.g. ``../shared/datasets/cifar10-jpeg``);
* ``"tfds:NAME"``: ``tensorflow_datasets.load(NAME, data_dir=data_dir)`` (offline once
  prepared; needs ``pip install "jaxattack[tfds]"``);
* ``"tfds-folder:ROOT"``: ``tfds.ImageFolder(ROOT)`` over the same folder layout
  (needs TensorFlow: ``pip install "jaxattack[tfds]"``).

Every source takes ``image_size=(H, W)`` (or ``224``, ``"224x192"``) with a named PIL
resampling filter (``resample="bilinear"`` by default; ``"nearest"``, ``"bicubic"``,
``"lanczos"``, ``"box"``, ``"hamming"``): each image is resized to exactly H x W (the
aspect ratio is not kept), and sets whose images differ in size need it.

Folder and tar sources are read with PIL only. Labels are the sorted label folder
names (alphabetical: airplane ... truck for CIFAR-10, matching tfds), and images come
in ``(label, filename)`` order, so every source gives the same deterministic arrays.
The readers themselves, resizing and the selection live in ``sources.py``; their public
names are importable from here.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from jaxattack.data.sources import (
    IMAGE_EXTS,
    TFDS_EXTRA_HINT,
    Arrays,
    CorruptImageError,
    Size,
    _load_folder,
    _load_tar,
    _load_tfds,
    _load_tfds_folder,
    _resize_all,
    _select,
    resize,
    select_images,
)
from jaxattack.data.sources import _decode as _decode  # tests decode one file

__all__ = ["CIFAR10_CLASSES", "IMAGE_EXTS", "RESAMPLING", "SAMPLE_PATH", "TFDS_EXTRA_HINT",
           "Arrays", "CorruptImageError", "Size", "cifar10_default_path", "load",
           "make_sample", "parse_image_size", "resize", "select_images"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
SAMPLE_PATH = Path(__file__).parents[1] / "assets" / "cifar10_sample.npz"
RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

# ----------------------------------------------------------------------------- public


def load(
    source: str | os.PathLike = "sample",
    split: str = "test",
    limit: int | None = None,
    per_class_limit: int | None = None,
    on_corrupt: str = "raise",
    data_dir: str | os.PathLike | None = None,
    image_size: int | str | tuple[int, int] | None = None,
    resample: str = "bilinear",
) -> Arrays:
    """Load a labelled image set as numpy arrays.

    Args:
      source: ``"sample"``, a folder, a ``.tar`` file, ``"tfds:NAME"`` or
        ``"tfds-folder:ROOT"`` (see the module docstring).
      split: which split to read (``"test"``, ``"train"``...). The built-in sample only
        has ``"test"``.
      limit: keep at most this many images, taken round-robin across classes (so
        ``limit=100`` on CIFAR-10 gives 10 per class), returned in label order.
      per_class_limit: keep at most this many images of each class (first by filename).
      on_corrupt: ``"raise"`` (default) raises :class:`CorruptImageError` naming the
        file; ``"skip"`` drops it with a warning. Folder and tar sources only.
      data_dir: tfds data directory for ``"tfds:NAME"``.
      image_size: resize every image to ``(H, W)`` (an int is square; ``"HxW"`` strings
        are accepted); needed when a source's images differ in size. ``None`` keeps the
        stored size.
      resample: the PIL filter for ``image_size``: one of ``RESAMPLING``.

    Returns:
      ``(images uint8[N, H, W, C], labels int64[N], class_names tuple[str, ...])``.
    """
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
    for arg, val in (("limit", limit), ("per_class_limit", per_class_limit)):
        if val is not None and (not isinstance(val, int) or val < 1):
            raise ValueError(f"{arg} must be a positive int or None, got {val!r}")
    size = parse_image_size(image_size)
    if resample not in RESAMPLING:
        raise ValueError(f"resample must be one of {RESAMPLING}, got {resample!r}")
    select = dict(limit=limit, per_class_limit=per_class_limit)
    sized = dict(size=size, resample=resample)

    if isinstance(source, str) and source == "sample":
        return _resize_all(*_load_sample(split, **select), **sized)
    if isinstance(source, str) and source.startswith("tfds:"):
        return _load_tfds(source[len("tfds:") :], split, data_dir, **select, **sized)
    if isinstance(source, str) and source.startswith("tfds-folder:"):
        return _load_tfds_folder(source[len("tfds-folder:") :], split, **select, **sized)

    path = Path(source).expanduser()
    if not path.exists():
        hint = ""
        if isinstance(source, str) and ":" in source and not Path(source.split(":")[0]).exists():
            hint = " (known prefixes: 'tfds:NAME', 'tfds-folder:ROOT')"
        raise FileNotFoundError(f"data source {str(source)!r} does not exist{hint}")
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise ValueError(f"{path} is a file but not a tar archive")
        return _load_tar(path, split, on_corrupt, **select, **sized)
    if (path / split).is_dir():
        return _load_folder(path / split, on_corrupt, **select, **sized)
    if (path / f"{split}.tar").is_file():
        return _load_tar(path / f"{split}.tar", split, on_corrupt, **select, **sized)
    raise FileNotFoundError(
        f"{path} has neither a {split}/ folder nor a {split}.tar "
        f"(expected {split}/<label>/*.jpg)"
    )


def parse_image_size(value) -> Size | None:
    """``None``, ``224``, ``"224"``, ``"224x192"`` (H x W), ``(224, 192)`` -> ``(H, W)``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        try:
            dims = [int(p) for p in parts]
        except ValueError:
            dims = []
    elif isinstance(value, int | np.integer):
        dims = [int(value)]
    else:
        try:
            dims = [int(v) for v in value]
        except (TypeError, ValueError):
            dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"image_size must be a positive int, (H, W) or 'HxW', got {value!r}")
    return dims[0], dims[1]


def cifar10_default_path() -> Path | None:
    """The shared CIFAR-10 JPEG folder if present, else ``None``.

    Looks at ``$JAXATTACK_CIFAR10``, then ``../shared/datasets/cifar10-jpeg`` (and
    ``shared/datasets/cifar10-jpeg``) relative to the working directory and to the
    repository root that holds this package.
    """
    env = os.environ.get("JAXATTACK_CIFAR10")
    if env:
        return Path(env)
    rel = Path("shared") / "datasets" / "cifar10-jpeg"
    repo = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), Path.cwd().parent, repo, repo.parent):
        if (base / rel).is_dir():
            return (base / rel).resolve()
    return None


def make_sample(
    source: str | os.PathLike, path: str | os.PathLike = SAMPLE_PATH, per_class: int = 100
) -> Path:
    """Write the built-in sample: the first ``per_class`` test images of each class."""
    images, labels, names = load(source, "test", per_class_limit=per_class)
    np.savez_compressed(path, images=images, labels=labels, class_names=np.array(names))
    return Path(path)


# ----------------------------------------------------------------------------- sample


def _load_sample(split: str, **select) -> Arrays:
    if split != "test":
        raise ValueError(f"the built-in sample only has the 'test' split, not {split!r}")
    if not SAMPLE_PATH.is_file():
        raise FileNotFoundError(f"built-in sample missing at {SAMPLE_PATH}; reinstall jaxattack")
    with np.load(SAMPLE_PATH) as f:
        images, labels = f["images"], f["labels"].astype(np.int64)
        names = tuple(str(n) for n in f["class_names"])
    idx = _select(labels, **select)
    return images[idx], labels[idx], names
