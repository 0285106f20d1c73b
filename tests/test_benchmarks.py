"""The benchmark scripts: each one loads and parses its options (fast), and
benchmarks/gpu_run.sh end to end on the CPU with toy sizes (SMOKE=1; slow).

The script is what a session with a lent GPU runs in its one 10-minute call; the smoke
run catches a broken step before such a session spends its device time on it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every script with a main(argv): --help loads it, its imports and its parser.
HELP_CHECK = """
import contextlib, io, runpy, sys
sys.path.insert(0, "benchmarks")
for path in sys.argv[1:]:
    main = runpy.run_path(path, run_name="benchmark")["main"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["--help"])
    assert "usage:" in out.getvalue(), path
"""


def test_every_benchmark_script_loads_and_parses_its_options():
    scripts = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.py")
                     if "def main(" in p.read_text())
    assert len(scripts) >= 15
    proc = subprocess.run([sys.executable, "-c", HELP_CHECK, *scripts], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils timeout")
def test_gpu_run_smoke_writes_every_result(tmp_path):
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable,
           "DATA": "sample", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(["bash", "benchmarks/gpu_run.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for bad in ("FAILED", "TIMED OUT", "skipped"):
        assert bad not in log, log
    # The device tool returns at most 8 files from $OUT: the script writes exactly these.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "log.txt", "throughput.json", "throughput.md", "tiny_10k.json", "repro.json",
        "allcnn_1k.json", "paper_table.json", "paper_table.md"])
    # the tail step's table, with Sparse-RS's ratio to DE
    assert "queries/s relative to DE" in log and "(sparse-rs default, round 0" in log
    repro = json.loads((tmp_path / "repro.json").read_text())
    assert repro["slots"] == [1, 4] and repro["identical"] is True  # on CPU, bit for bit
    for name, model, images in (("tiny_10k", "tiny", 4), ("allcnn_1k", "allcnn", 2)):
        rec = json.loads((tmp_path / f"{name}.json").read_text())
        assert (rec["model"], rec["images"], rec["population"]) == (model, images, 8)
        # Every problem is charged its initial population plus each generation it ran.
        assert 8 * images <= rec["queries"] <= 8 * 3 * images
        assert rec["seconds"] > 0 and rec["met"] is False  # a toy target of 0 s
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["tiny"] and rows[0]["attack_q_s"] > 0
    table = json.loads((tmp_path / "paper_table.json").read_text())
    assert [(a["model"], a["pixels"], a["n_images"]) for a in table["aggregates"]] == [
        ("tiny", 1, 2)]
