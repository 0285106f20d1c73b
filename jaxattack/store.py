"""Append-only results store: ``RUN/results.jsonl``, ``RUN/meta.json``, ``RUN/images/``.

One JSON row per problem (image x experiment x target). Rows are appended with a
single ``write`` on an ``O_APPEND`` descriptor and fsynced, and PNGs are written
(atomically) before the rows that name them, so a ``kill -9`` at any moment leaves
at most a torn final line, which readers skip and the next writer cuts off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from jaxattack.files import write_atomic

RESULTS = "results.jsonl"
META = "meta.json"


def read_rows(path: Path) -> tuple[list[dict], int]:
    """Rows of a JSONL file and the byte length of its intact part.

    A final line without its newline (a killed writer) is ignored; a bad line
    anywhere else is an error.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    rows = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: corrupt row ({e})") from None
    return rows, end


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """``results.jsonl`` and the per-process ``results.p{i}.jsonl`` shards of a run."""
    return sorted(Path(root).glob("results*.jsonl"))


class ResultStore:
    """A run folder. ``append`` rows, ``done`` keys for resuming, ``save_pngs`` images.

    With ``shard=(i, n)`` (process ``i`` of ``n``) this writer appends to its own
    ``results.p{i}.jsonl``; reading always merges every ``results*.jsonl`` shard.
    """

    def __init__(self, root: str | os.PathLike, shard: tuple[int, int] = (0, 1)):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        i, n = shard
        self.results = self.root / (RESULTS if n == 1 else f"results.p{i}.jsonl")

    def shards(self) -> list[Path]:
        return shard_paths(self.root)

    def rows(self) -> list[dict]:
        return [r for path in self.shards() for r in read_rows(path)[0]]

    def done(self) -> set[tuple[str, int, int]]:
        """``(experiment, image_id, target)`` of every stored row."""
        return {(r["experiment"], r["image_id"], r["target"]) for r in self.rows()}

    def repair(self) -> None:
        """Cut a torn final line left by a killed writer."""
        _, end = read_rows(self.results)
        if self.results.exists() and self.results.stat().st_size > end:
            os.truncate(self.results, end)

    def append(self, rows: Iterable[dict]) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        if not data:
            return
        fd = os.open(self.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def meta(self) -> dict:
        path = self.root / META
        return json.loads(path.read_text()) if path.exists() else {}

    def write_meta(self, meta: dict) -> None:
        write_atomic(self.root / META, json.dumps(meta, indent=1, sort_keys=True).encode())

    def save_pngs(self, stem: str, original: np.ndarray, adversarial: np.ndarray,
                  pixels: np.ndarray) -> str:
        """Write ``stem_orig.png``, ``stem_adv.png`` and ``stem_crop.png``; return the
        adversarial PNG's path relative to the run folder."""
        base = Path("images") / stem
        (self.root / base).parent.mkdir(parents=True, exist_ok=True)
        for suffix, img in (("orig", original), ("crop", magnified_crop(adversarial, pixels)),
                            ("adv", adversarial)):
            write_atomic(self.root / f"{base}_{suffix}.png", _png(img))
        return f"{base.as_posix()}_adv.png"


def _png(img: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def load_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG as uint8 ``[H, W, C]``."""
    a = np.asarray(Image.open(path))
    return a[..., None] if a.ndim == 2 else a


def magnified_crop(image: np.ndarray, pixels: np.ndarray, margin: int = 3,
                   scale: int = 8) -> np.ndarray:
    """The box around the changed pixels plus a margin, enlarged ``scale`` times."""
    h, w = image.shape[:2]
    xs, ys = pixels[:, 0], pixels[:, 1]
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    crop = image[y0:y1, x0:x1]
    return np.repeat(np.repeat(crop, scale, axis=0), scale, axis=1)
