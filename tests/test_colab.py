"""The Colab notebooks run top to bottom: their code cells, in order, with tiny settings."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "colab").glob("*.ipynb"))


def _code(notebook: pathlib.Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    code = _code(notebook)
    assert "\n!" not in code and "\n%" not in code, "keep cells plain Python so that they run outside IPython"
    env = {**os.environ, "JAXRL_SI_NOTEBOOK_TINY": "1", "JAXRL_SI_NOTEBOOK_RUNS": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    for run_dir in (p for p in tmp_path.iterdir() if p.is_dir()):
        assert (run_dir / "table.csv").is_file() and (run_dir / "curves.png").is_file(), run_dir
    if notebook.name == "ppo_sweep.ipynb":
        assert "same table" in out.stdout and "24 members" in out.stdout, out.stdout[-2000:]
