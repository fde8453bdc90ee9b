"""What the experiments' reports share: a mean with its 95 % interval over seeds, formatted for
tables, and the description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any

import numpy as np
from scipy import stats


def mean_interval(values) -> dict[str, Any]:
    """Mean and 95 % Student-t interval of the mean over seeds (None and non-finite values dropped)."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if values.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = float(values.mean())
    if values.size == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(values.size)}


def format_interval(cell: dict[str, Any], digits: int = 1) -> str:
    """`mean [low, high]` of a `mean_interval` cell; `n/a` without values."""
    if cell["mean"] is None:
        return "n/a"
    if cell["low"] is None:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def machine(*packages: str) -> dict[str, Any]:
    """The machine, JAX's devices and backend, the date, and the versions of jax, jaxlib and `packages`."""
    import jax

    versions = {name: metadata.version(name) for name in ("jaxlib", *packages)}
    return {
        "machine": platform.processor() or platform.machine(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "devices": jax.device_count(), "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__, **versions, "python": platform.python_version(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
