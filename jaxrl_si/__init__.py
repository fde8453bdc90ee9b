"""jaxrl_si: a JAX-native research library for self-improving agents.

Subpackages load on first use (`jaxrl_si.sweep` imports the sweep machinery when touched), so
`import jaxrl_si.losses` brings in JAX and the losses, not Orbax, tqdm or matplotlib.
"""

import importlib

__version__ = "0.1.0"

__all__ = [
    "agents",
    "checkpoint",
    "data",
    "distributed",
    "envs",
    "errors",
    "layout",
    "loop",
    "losses",
    "metrics",
    "nets",
    "parallel",
    "paths",
    "plots",
    "preferences",
    "sequence",
    "sinks",
    "sweep",
    "__version__",
]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
