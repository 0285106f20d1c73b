"""Append-only results store: ``RUN/results.jsonl``, ``RUN/meta.json``, ``RUN/images/``.

One JSON row per problem (image x experiment x target). Rows are appended with a
single ``write`` on an ``O_APPEND`` descriptor and fsynced, and PNGs are written
(atomically) before the rows that name them, so a ``kill -9`` at any moment leaves
at most a torn final line, which readers skip and the next writer cuts off.

One writer per run folder (per shard for multi-process runs): ``ResultStore.writing()``
holds an advisory ``fcntl.flock`` on ``RUN/.lock`` (exclusive; shared plus an exclusive
``RUN/.lock.p{i}`` for the shard of process ``i``), so a second writer fails at once
with a message naming the holder instead of doing all the work again. A corrupt row in
the middle of a shard is an error for every reader; :func:`repair` moves such lines to
``RUN/results*.quarantine.jsonl`` and keeps every good row.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from jaxattack.data.files import write_atomic

RESULTS = "results.jsonl"
META = "meta.json"
LOCK = ".lock"
QUARANTINE = ".quarantine.jsonl"


class StoreLocked(RuntimeError):
    """Another process is writing to the same run folder (or shard)."""


def _bad_line(line: bytes) -> str | None:
    """Why a stored line is not a row (None if it is one)."""
    try:
        row = json.loads(line)
    except ValueError as e:
        return str(e)
    return None if isinstance(row, dict) else f"not a JSON object: {line[:40]!r}"


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
            why = _bad_line(line)
            if why:
                raise ValueError(f"{path}:{n}: corrupt row ({why}); `jaxattack repair "
                                 f"{path.parent}` moves bad rows aside") from None
            rows.append(json.loads(line))
    return rows, end


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """``results.jsonl`` and the per-process ``results.p{i}.jsonl`` shards of a run."""
    return sorted(p for p in Path(root).glob("results*.jsonl") if not p.name.endswith(QUARANTINE))


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
        # (path, flock mode) of the locks a writer of this store holds
        self._locks = ([(self.root / LOCK, fcntl.LOCK_EX)] if n == 1 else
                       [(self.root / LOCK, fcntl.LOCK_SH),
                        (self.root / f"{LOCK}.p{i}", fcntl.LOCK_EX)])

    @contextlib.contextmanager
    def writing(self):
        """Hold this store's writer locks (raises ``StoreLocked`` at once if another
        process holds them), and cut a torn final line left by a killed writer."""
        with contextlib.ExitStack() as stack:
            for path, mode in self._locks:
                stack.enter_context(_flock(path, mode, self.root))
            self.trim()
            yield self

    def shards(self) -> list[Path]:
        return shard_paths(self.root)

    def rows(self) -> list[dict]:
        return [r for path in self.shards() for r in read_rows(path)[0]]

    def done(self) -> set[tuple[str, int, int]]:
        """``(experiment, image_id, target)`` of every stored row."""
        return {(r["experiment"], r["image_id"], r["target"]) for r in self.rows()}

    def trim(self) -> None:
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


@contextlib.contextmanager
def _flock(path: Path, mode: int, root: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StoreLocked(f"run folder {root} is being written by {holder}; wait for it "
                              f"to finish or use another --out") from None
        os.ftruncate(fd, 0)  # no writer holds it: what it says is stale
        if mode == fcntl.LOCK_EX:
            cmd = " ".join(os.path.basename(a) for a in sys.argv[:2])
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({cmd}), since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
        if mode == fcntl.LOCK_EX:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def repair(root: str | os.PathLike) -> dict[str, int]:
    """Move every line of every shard that is not a row (corrupt, or a torn final line)
    to ``<shard>.quarantine.jsonl`` beside it; keep every good row in order. Returns
    ``{shard name: lines moved}``. Takes the writer locks of the whole folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist")
    moved = {}
    with _flock(root / LOCK, fcntl.LOCK_EX, root):
        for path in shard_paths(root):
            lines = path.read_bytes().splitlines(keepends=True)
            bad = {i for i, ln in enumerate(lines)
                   if ln.strip() and (not ln.endswith(b"\n") or _bad_line(ln))}
            if bad:
                quarantine = path.with_name(path.name[: -len(".jsonl")] + QUARANTINE)
                with open(quarantine, "ab") as f:  # first the copy, then the cut
                    f.write(b"".join(lines[i].rstrip(b"\n") + b"\n" for i in sorted(bad)))
                    f.flush()
                    os.fsync(f.fileno())
                write_atomic(path, b"".join(ln for i, ln in enumerate(lines) if i not in bad))
            moved[path.name] = len(bad)
    return moved
