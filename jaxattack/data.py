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
"""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
SAMPLE_PATH = Path(__file__).parent / "assets" / "cifar10_sample.npz"
TFDS_EXTRA_HINT = 'pip install "jaxattack[tfds]"'

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]
RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
Size = tuple[int, int]


class CorruptImageError(ValueError):
    """An image file that PIL cannot decode (corrupt, truncated or not an image)."""


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


def resize(image: np.ndarray, size: Size, resample: str = "bilinear") -> np.ndarray:
    """One uint8 HWC image resized to ``size = (H, W)`` with a named PIL filter."""
    if image.shape[:2] == tuple(size):
        return image
    filt = getattr(Image.Resampling, resample.upper())
    chans = image.shape[2] if image.ndim == 3 else None
    im = Image.fromarray(image[..., 0] if chans == 1 else image)
    out = np.asarray(im.resize((size[1], size[0]), filt), np.uint8)
    return out.reshape(*size, chans) if chans is not None else out


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
    repo = Path(__file__).resolve().parent.parent
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


# ----------------------------------------------------------------------------- selection


def select_images(labels, n: int | None) -> np.ndarray:
    """Sorted indices of the first ``n`` images taken round-robin over classes (the first
    of class 0, the first of class 1, ..., then the second of each): balanced, and a
    prefix of any larger selection. ``None`` keeps every image."""
    labels = np.asarray(labels)
    if n is None:
        return np.arange(len(labels))
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(where.size)
    return np.sort(np.lexsort((labels, rank))[:n])


def _select(labels: np.ndarray, limit: int | None, per_class_limit: int | None) -> np.ndarray:
    """Indices to keep, in label order: at most ``per_class_limit`` of each class (first
    by position), then at most ``limit`` taken round-robin (:func:`select_images`)."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if per_class_limit is not None:
        idx = np.concatenate([np.flatnonzero(labels == c)[:per_class_limit]
                              for c in np.unique(labels)] or [idx[:0]])
        idx.sort()
    idx = idx[select_images(labels[idx], limit)]
    return idx[np.argsort(labels[idx], kind="stable")]


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


# ----------------------------------------------------------------------------- folder / tar


def _decode(name: str, data: bytes, size: Size | None = None,
            resample: str = "bilinear") -> np.ndarray:
    """Decode one image file to uint8 HWC RGB (resized to ``size``), or raise
    CorruptImageError naming it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), getattr(Image.Resampling,
                                                             resample.upper()))
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot decode image {name}: {e}") from e


def _mixed_sizes_error(origin: str, odd: str, odd_shape, first: str, first_shape):
    return ValueError(
        f"images in {origin} differ in size: {odd} is {odd_shape[0]}x{odd_shape[1]}, "
        f"{first} is {first_shape[0]}x{first_shape[1]} (H x W); pass image_size=(H, W) "
        f"(CLI: --image-size HxW) to resize every image")


def _decode_all(named: list[tuple[str, bytes, int]], on_corrupt: str, origin: str,
                size: Size | None = None, resample: str = "bilinear") -> Arrays:
    """Decode (name, bytes, label) triples in parallel; handle corrupt files; stack."""

    def one(item):
        try:
            return _decode(item[0], item[1], size, resample)
        except CorruptImageError as e:
            if on_corrupt == "raise":
                raise
            warnings.warn(f"skipping {e}", stacklevel=4)
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(one, named, chunksize=256))
    keep = [i for i, im in enumerate(decoded) if im is not None]
    if not keep:
        raise ValueError(f"no readable images in {origin}")
    shapes = {decoded[i].shape for i in keep}
    if len(shapes) > 1:
        first = decoded[keep[0]].shape
        odd = next(i for i in keep if decoded[i].shape != first)
        raise _mixed_sizes_error(origin, named[odd][0], decoded[odd].shape,
                                 named[keep[0]][0], first)
    images = np.stack([decoded[i] for i in keep])
    labels = np.array([named[i][2] for i in keep], np.int64)
    return images, labels, ()


def _index(entries: list[tuple[str, str]], origin: str) -> tuple[list[int], tuple[str, ...]]:
    """Given (label, filename) pairs, return labels as ints and the sorted class names."""
    if not entries:
        raise ValueError(f"no {'/'.join(IMAGE_EXTS)} images found in {origin}")
    names = tuple(sorted({label for label, _ in entries}))
    lookup = {n: i for i, n in enumerate(names)}
    return [lookup[label] for label, _ in entries], names


def _load_folder(root: Path, on_corrupt: str, size=None, resample="bilinear",
                 **select) -> Arrays:
    entries = sorted(
        (d.name, f.name)
        for d in root.iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if f.suffix.lower() in IMAGE_EXTS
    )
    ints, names = _index(entries, str(root))
    idx = _select(np.array(ints), **select)
    files = [root / entries[i][0] / entries[i][1] for i in idx]
    named = [(str(f), f.read_bytes(), ints[i]) for f, i in zip(files, idx, strict=True)]
    images, labels, _ = _decode_all(named, on_corrupt, str(root), size, resample)
    return images, labels, names


def _load_tar(path: Path, split: str, on_corrupt: str, size=None, resample="bilinear",
              **select) -> Arrays:
    files: dict[tuple[str, str], bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:  # stream: one pass, no seeking
            parts = Path(m.name).parts
            parts = parts[1:] if parts and parts[0] == "." else parts
            if not m.isfile() or len(parts) != 3 or parts[0] != split:
                continue
            if Path(parts[2]).suffix.lower() in IMAGE_EXTS:
                files[(parts[1], parts[2])] = tar.extractfile(m).read()
    entries = sorted(files)
    ints, names = _index(entries, f"{path} (split {split!r})")
    idx = _select(np.array(ints), **select)
    named = [
        (f"{path}:{split}/{entries[i][0]}/{entries[i][1]}", files[entries[i]], ints[i]) for i in idx
    ]
    images, labels, _ = _decode_all(named, on_corrupt, str(path), size, resample)
    return images, labels, names


# ----------------------------------------------------------------------------- tfds


def _import_tfds(what: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"{what} needs tensorflow-datasets: {TFDS_EXTRA_HINT}") from e
    return tfds


def _load_tfds(name: str, split: str, data_dir, size=None, resample="bilinear",
               **select) -> Arrays:
    tfds = _import_tfds(f"source 'tfds:{name}'")
    try:  # never downloads: prepare the dataset once with tfds (or `tfds build`) first
        # batch_size=-1 stacks the whole split (same-size images only); with image_size
        # the images are read one by one and resized.
        ds, info = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True,
                             batch_size=-1 if size is None else None, with_info=True,
                             download=False)
    except Exception as e:
        raise FileNotFoundError(
            f"tfds dataset {name!r} (split {split!r}) is not prepared in data_dir="
            f"{data_dir or '~/tensorflow_datasets'} and jaxattack does not download: {e}"
        ) from e
    names = tuple(info.features["label"].names)
    if size is None:
        images, labels = tfds.as_numpy(ds)
        return _finish(np.asarray(images, np.uint8), np.asarray(labels, np.int64), names,
                       **select)
    pairs = [(np.asarray(im, np.uint8), int(y)) for im, y in tfds.as_numpy(ds)]
    labels = np.array([y for _, y in pairs], np.int64)
    idx = _select(labels, **select)
    images = np.stack([resize(pairs[i][0], size, resample) for i in idx])
    return images, labels[idx], names


def _load_tfds_folder(root: str, split: str, size=None, resample="bilinear",
                      **select) -> Arrays:
    tfds = _import_tfds("source 'tfds-folder:...' (tfds.ImageFolder)")
    try:
        import tensorflow  # noqa: F401  # ImageFolder decodes with TensorFlow
    except ImportError as e:
        raise ImportError(f"tfds.ImageFolder needs TensorFlow: {TFDS_EXTRA_HINT}") from e
    if not Path(root, split).is_dir():
        raise FileNotFoundError(f"tfds.ImageFolder needs a folder {Path(root, split)}")
    builder = tfds.ImageFolder(root)
    names = tuple(builder.info.features["label"].names)
    if size is None:
        ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=-1)
        d = tfds.as_numpy(ds)
        ims, labs, fnames = d["image"], d["label"], d["image/filename"]
    else:  # one by one: the images may differ in size
        ds = builder.as_dataset(split=split, shuffle_files=False)
        rows = list(tfds.as_numpy(ds))
        ims = [r["image"] for r in rows]
        labs = [r["label"] for r in rows]
        fnames = [r["image/filename"] for r in rows]
    # ImageFolder's order is arbitrary: sort by (label, filename) like the PIL reader.
    files = [Path(f.decode() if isinstance(f, bytes) else f).name for f in fnames]
    order = sorted(range(len(files)), key=lambda i: (int(labs[i]), files[i]))
    labels = np.asarray(labs, np.int64)[order]
    if size is None:
        return _finish(np.asarray(ims, np.uint8)[order], labels, names, **select)
    idx = _select(labels, **select)
    images = np.stack([resize(np.asarray(ims[order[i]], np.uint8), size, resample)
                       for i in idx])
    return images, labels[idx], names


def _resize_all(images, labels, names, size=None, resample="bilinear") -> Arrays:
    """Resize already-decoded arrays (the built-in sample) to ``size``."""
    if size is None or images.shape[1:3] == tuple(size):
        return images, labels, names
    return np.stack([resize(im, size, resample) for im in images]), labels, names


def _finish(images, labels, names, **select) -> Arrays:
    """Apply the selection to already-decoded arrays (tfds order is not label order)."""
    idx = _select(labels, **select)
    return images[idx], labels[idx], names
