"""The rules of jaxrl_si/agents/README.md that can be checked mechanically, for every agent module."""

import ast
import pathlib
import subprocess
import sys

import pytest

AGENTS = sorted(p for p in (pathlib.Path(__file__).parent.parent / "jaxrl_si" / "agents").glob("*.py") if p.name != "__init__.py")
ALLOWED = {
    "jaxrl_si.losses", "jaxrl_si.nets", "jaxrl_si.envs", "jaxrl_si.data", "jaxrl_si.metrics", "jaxrl_si.layout",
    "jaxrl_si.errors", "jaxrl_si.preferences", "jaxrl_si.sequence", "jaxrl_si.agents",
}  # fmt: skip


def _jaxrl_si_imports(path: pathlib.Path) -> set[str]:
    """`jaxrl_si.<module>` for every import of the package in `path` (from-imports of names included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("jaxrl_si")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxrl_si"):
            found |= {f"{node.module}.{alias.name}" if node.module == "jaxrl_si" else node.module for alias in node.names}
    return {".".join(name.split(".")[:2]) for name in found}


def test_there_are_agents():
    assert AGENTS


@pytest.mark.parametrize("path", AGENTS, ids=lambda p: p.name)
def test_agents_import_no_orchestration(path):
    imported = _jaxrl_si_imports(path)
    assert imported and imported <= ALLOWED, sorted(imported - ALLOWED)


def test_losses_and_agents_import_no_io_or_plotting_backends():
    code = (
        "import sys, jaxrl_si.losses, jaxrl_si.data\n"
        + "".join(f"import jaxrl_si.agents.{path.stem}\n" for path in AGENTS)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'orbax', 'tqdm', 'matplotlib', 'tensorboardX', 'tensorflow_datasets'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout
