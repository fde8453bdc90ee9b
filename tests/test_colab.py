"""The Colab notebooks run top to bottom: their code cells, in order, with tiny settings."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from cpu_devices import FAST_COMPILE_FLAGS, compile_cache_env

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))

# Per notebook: the files its tiny run must leave under JAXRL_SI_NOTEBOOK_RUNS (non-empty), and what it
# must print (that the resumed run reproduced the first; what a by-hand cell must find).
EXPECTED = {
    "ppo_sweep.ipynb": (
        ["cartpole_8_seeds/table.csv", "cartpole_8_seeds/curves.png", "cartpole_grid/table.csv", "cartpole_grid/curves.png",
         "cartpole_grid/heatmap.png"],
        ["same table", "24 members"],
    ),
    "preference_bandits.ipynb": (
        ["preference_bandits/tables.md", "preference_bandits/deterministic.png", "preference_bandits/intransitive_gap.png",
         "preference_bandits/intransitive_simplex.png"],
        ["Transitive control", "duality gap 0.000"],
    ),
    "spo.ipynb": (
        ["spo/results.md", "spo/results.json", "spo/table.csv", "spo/returns.png", "spo/curves.png", "spo/win_rates_constrained.png",
         "spo/win_rates_majority.png"],
        ["same table", "win rates [0.5 0.5 0.5]"],
    ),
    "cpl.ipynb": (
        ["cpl/results.md", "cpl/results.json", "cpl/returns.png", "cpl/dataset/oracle.msgpack", "cpl/cpl-dense/table.csv"],
        ["same table"],
    ),
    "self_improve.ipynb": (
        ["self_improve/results.md", "self_improve/results.json", "self_improve/self_improve.png", "self_improve/self_improve_logps.png",
         "self_improve/rpo/metrics.jsonl"],
        ["same table"],
    ),
    "spr.ipynb": (
        ["spr/results.md", "spr/results.json", "spr/eval.png", "spr/final.png", "spr/cosine.png", "spr/Breakout-MinAtar/spr/table.csv"],
        ["same table"],
    ),
    "hilp.ipynb": (
        ["hilp/results.md", "hilp/results.json", "hilp/curves.png", "hilp/phi.png", "hilp/hilbert/table.csv"],
        ["same table"],
    ),
}  # fmt: skip


def _code(notebook: pathlib.Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def test_there_are_notebooks_and_each_names_its_artifacts():
    assert NOTEBOOKS
    assert {notebook.name for notebook in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_saved_clean(notebook):
    saved = json.loads(notebook.read_text())
    assert saved["nbformat"] == 4 and saved["metadata"]["kernelspec"]["name"] == "python3"
    for cell in saved["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:1]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(notebook, tmp_path):
    code = _code(notebook)
    assert "\n!" not in code and "\n%" not in code, "keep cells plain Python so that they run outside IPython"
    env = {
        **os.environ,
        "JAXRL_SI_NOTEBOOK_TINY": "1",
        "JAXRL_SI_NOTEBOOK_RUNS": str(tmp_path),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": FAST_COMPILE_FLAGS,  # tiny runs are all compilation: skip LLVM's optimisation
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),  # `experiments`, as in a checkout
        **compile_cache_env(),  # a notebook's resume cell loads the programs its first run compiled
    }
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    artifacts, printed = EXPECTED[notebook.name]
    for name in artifacts:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    for text in printed:
        assert text in out.stdout, (text, out.stdout[-2000:])
