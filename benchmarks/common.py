"""What the benchmark scripts share: options, the machine line, result files, timing.

Scripts run as ``python benchmarks/NAME.py`` from the repo root; Python puts
``benchmarks/`` first on ``sys.path``, so they import this module (and each other) by
bare name: ``from common import machine, parser``. Nothing here imports jax at import
time, so ``--help`` stays quick and a script can still set ``jax_num_cpu_devices``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # benchmarks/
ROOT = HERE.parent  # the repo


def parser(doc: str, **options) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` described by ``doc``'s first paragraph, with one ``--name``
    per keyword (``slot_count=4`` is ``--slot-count``, default 4): the value is the
    default, or ``(default, help)``. An int or float default sets the type, ``False``
    makes a flag; anything else (a comma list, ``None``) is a string. Options that need
    more (choices, a float without a default) are added to the returned parser."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name, spec in options.items():
        default, text = spec if isinstance(spec, tuple) else (spec, None)
        flag = "--" + name.replace("_", "-")
        if default is False:
            ap.add_argument(flag, action="store_true", help=text)
        else:
            kind = type(default) if type(default) in (int, float) else None
            ap.add_argument(flag, default=default, type=kind, help=text)
    return ap


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine() -> str:
    """The benchmarks' one machine line: architecture, cores, JAX's platform and device."""
    import jax

    dev = jax.devices()[0]
    kind = dev.device_kind if dev.platform != "cpu" else cpu_model()
    return f"{platform.machine()}, {os.cpu_count()} cores, {dev.platform}: {kind}"


def write_json(path, obj, indent: int | None = 2, default=None) -> None:
    """``obj`` as JSON at ``path`` (its folder made if missing), ending in a newline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, default=default) + "\n")


def print_record(record: dict, path=None) -> dict:
    """Print ``record`` as one JSON line; with ``path``, write it there too."""
    if path:
        write_json(path, record, indent=1)
    print(json.dumps(record))
    return record


def write_outputs(out, result, text: str | None, *, indent: int | None = 2, echo=True,
                  default=None) -> None:
    """Print ``text`` (``echo``); with ``out``, write ``OUT.json`` (``result``) and, with
    ``text``, ``OUT.md``. ``out`` is a stem: ``--out X`` and ``--out X.json`` both write
    ``X.json`` and ``X.md``."""
    if echo and text is not None:
        print(text)
    if not out:
        return
    stem = str(out)[:-5] if str(out).endswith(".json") else str(out)
    write_json(stem + ".json", result, indent, default)
    if text is not None:
        Path(stem + ".md").write_text(text)


def best_of(fns: dict, reps: int, warmup: bool = True) -> dict[str, float]:
    """Best-of-``reps`` seconds per function, the functions alternated (a load spike on a
    shared machine then hits all of them, and the minimum is the least disturbed run),
    after one untimed call each (``warmup``). Each call is waited for
    (``jax.block_until_ready`` on what it returns)."""
    import jax

    if warmup:
        for fn in fns.values():
            jax.block_until_ready(fn())
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def fixtures():
    """``tests/fixtures/make_fixtures.py``: the PyTorch, Keras, TF and ONNX builders."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fixtures import make_fixtures

    return make_fixtures
