"""examples/*.ipynb run top to bottom in a real Jupyter kernel without an error."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_one_notebook_per_chapter():
    assert [p.name[:4] for p in NOTEBOOKS] == ["ch02", "ch03", "ch04", "ch05", "ch06"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if path.stem.startswith("ch02"):
        assert "[0, 1, 1, 0]" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if not path.stem.startswith("ch02"):
        assert images, f"{path.name} shows no figure"
    reprs = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    if path.stem[:4] in ("ch04", "ch05", "ch06"):
        assert "History(" in reprs and "epochs" in reprs
