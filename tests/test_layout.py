"""The README's architecture table is true: every module is listed, imports point down."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxattack"


def _table_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Architecture\n")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([a-z_/]+?)(?:\.py)?/?`", row.split("|")[1]) for row in rows]


def _unit(module: str) -> str:
    """``jaxattack.models.weights`` -> ``models``; ``jaxattack.engine`` -> ``engine``."""
    return module.split(".")[1] if module.count(".") else ""


def _imports(path: Path) -> set[str]:
    """The jaxattack top-level units a file imports (absolute or relative)."""
    pkg_parts = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("jaxattack"):
                continue
            if mod == "jaxattack":
                found |= {n.name for n in node.names}
            else:
                found.add(_unit(mod))
        elif isinstance(node, ast.Import):
            found |= {_unit(a.name) for a in node.names if a.name.startswith("jaxattack.")}
    return found - {"", "__version__"}


def test_every_module_is_in_the_table_once():
    listed = [u for row in _table_rows() for u in row]
    on_disk = {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    on_disk |= {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(listed) == sorted(on_disk)


def test_imports_point_only_down_the_table():
    rank = {u: i for i, row in enumerate(_table_rows()) for u in row}
    bad = []
    for unit, i in rank.items():
        path = PKG / unit
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for f in files:
            for dep in _imports(f) - {unit}:
                if dep in rank and rank[dep] <= i:
                    bad.append(f"{f.relative_to(ROOT)} imports {dep}")
    assert not bad, bad


def test_library_code_leaves_jax_config_alone():
    """Only the command lines (cli.py, train's main) set jax.config."""
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        if "jax.config.update" not in text:
            continue
        rel = path.relative_to(PKG).as_posix()
        if rel == "train/__init__.py":
            main = text[text.index("def main("):]
            assert text.count("jax.config.update") == main.count("jax.config.update"), rel
        elif rel != "cli.py":
            assert "jax.config.update(cpu" in text or "cpu_collectives)" in text, rel


def test_public_submodules_load_lazily():
    import subprocess
    import sys

    code = ("import sys, jaxattack as ja; assert 'jaxattack.models' not in sys.modules; "
            "assert callable(ja.models.load) and callable(ja.data.load); "
            "assert callable(ja.sweep.run) and callable(ja.report.write_report)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
