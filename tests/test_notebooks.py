"""The notebooks run top to bottom (small budgets injected into their parameters cell)."""

from pathlib import Path

import pytest

from tests import toys

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FAST = {
    "01_quickstart": "IMAGES = 4\nPOPULATION = 20\nGENERATIONS = 5",
    "02_paper_figures": "RUN = 'nb-run'\nIMAGES = 3\nPOPULATION = 20\nGENERATIONS = 4\n"
                        "PIXELS = [1, 2]",
    "03_your_own_model": "POPULATION = 12\nGENERATIONS = 3",
}


def test_every_notebook_is_covered():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(FAST)


@pytest.mark.parametrize("name", toys.fast_only(sorted(FAST), set()))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "each notebook has one cell tagged 'parameters'"
    params[0].source = FAST[name]
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks with outputs cleared"
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
