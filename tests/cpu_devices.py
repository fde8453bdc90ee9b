"""Run code in a fresh Python process on N XLA:CPU host devices.

The device count is fixed when JAX starts, so tests of other layouts (8 fake devices, a mesh,
a checkpoint moved between device counts) run their code in a subprocess. This is the one
place that sets up that process.
"""

import os
import subprocess
import sys


def cpu_devices_env(devices: int, *, xla_flags: str = "") -> dict[str, str]:
    """This process's environment with JAX on `devices` CPU devices (plus any other XLA flags)."""
    flags = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}


def run_on_cpu_devices(code: str, *args, devices: int = 8, xla_flags: str = "", timeout: float = 600) -> str:
    """`python -c code *args` on `devices` CPU devices; asserts it exits 0 having printed OK last.

    Returns its stdout. On failure the assertion shows the end of stdout and stderr.
    """
    command = [sys.executable, "-c", code, *map(str, args)]
    out = subprocess.run(command, capture_output=True, text=True, env=cpu_devices_env(devices, xla_flags=xla_flags), timeout=timeout)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), f"{out.stdout[-1000:]}\n{out.stderr[-3000:]}"
    return out.stdout
