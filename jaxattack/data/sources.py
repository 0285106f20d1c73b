"""The readers behind :func:`jaxattack.data.load`: folder and tar sources decoded with
PIL (in parallel; corrupt files raised or skipped; mixed sizes named), tfds and
tfds.ImageFolder sources, resizing, and the selection of images per class and
round-robin over classes. Each reader returns ``(uint8 NHWC images, int64 labels,
class_names)`` in label order."""

from __future__ import annotations

import io
import os
import tarfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
TFDS_EXTRA_HINT = 'pip install "jaxattack[tfds]"'

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]
Size = tuple[int, int]


class CorruptImageError(ValueError):
    """An image file that PIL cannot decode (corrupt, truncated or not an image)."""


def resize(image: np.ndarray, size: Size, resample: str = "bilinear") -> np.ndarray:
    """One uint8 HWC image resized to ``size = (H, W)`` with a named PIL filter."""
    if image.shape[:2] == tuple(size):
        return image
    filt = getattr(Image.Resampling, resample.upper())
    chans = image.shape[2] if image.ndim == 3 else None
    im = Image.fromarray(image[..., 0] if chans == 1 else image)
    out = np.asarray(im.resize((size[1], size[0]), filt), np.uint8)
    return out.reshape(*size, chans) if chans is not None else out


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
    """Given (label, filename) pairs, return labels as ints and the class names. Class
    folders named by integers are those class indices (CIFAR-10's ``0``..``9``, or
    ImageNet's ``285`` for a few photos of a 1000-class model; class names ``"0"`` ..
    up to the largest); other names are numbered in sorted order."""
    if not entries:
        raise ValueError(f"no {'/'.join(IMAGE_EXTS)} images found in {origin}")
    found = sorted({label for label, _ in entries})
    if all(n.isdigit() for n in found):
        top = max(int(n) for n in found)
        return [int(label) for label, _ in entries], tuple(str(i) for i in range(top + 1))
    lookup = {n: i for i, n in enumerate(found)}
    return [lookup[label] for label, _ in entries], tuple(found)


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
