"""Run code in fresh Python processes on N XLA:CPU host devices, alone or joined as one JAX run.

The device count is fixed when JAX starts, so tests of other layouts (8 fake devices, a mesh,
a checkpoint moved between device counts) run their code in a subprocess. Multi-process tests
start several such processes joined on localhost (`run_joined`). This is the one place that
sets up those processes.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

# XLA:CPU flags for compile-bound test processes (tiny configs, several programs): no LLVM
# optimisation, about half the compile time. Never where a result is compared bitwise with a
# program compiled with other flags (it changes float results: test_parallel's sweep check).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0"


def cpu_devices_env(devices: int, *, xla_flags: str = "") -> dict[str, str]:
    """This process's environment with JAX on `devices` CPU devices (plus any other XLA flags),
    compiling through the session's persistent cache (`conftest.py`) when there is one."""
    flags = f"--xla_force_host_platform_device_count={devices} {xla_flags}".strip()
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags, **compile_cache_env()}


def compile_cache_env() -> dict[str, str]:
    """The environment variables that point a JAX process at the session's persistent compile
    cache (`conftest.py`); none outside a test session."""
    if "JAXRL_SI_TEST_XLA_CACHE" not in os.environ:
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": os.environ["JAXRL_SI_TEST_XLA_CACHE"], "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}


def run_on_cpu_devices(code: str, *args, devices: int = 8, xla_flags: str = "", timeout: float = 600) -> str:
    """`python -c code *args` on `devices` CPU devices; asserts it exits 0 having printed OK last.

    Returns its stdout. On failure the assertion shows the end of stdout and stderr.
    """
    command = [sys.executable, "-c", code, *map(str, args)]
    out = subprocess.run(command, capture_output=True, text=True, env=cpu_devices_env(devices, xla_flags=xla_flags), timeout=timeout)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), f"{out.stdout[-1000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for a coordinator: one per test)."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run_joined(
    command: list[str], *, processes: int = 2, devices: int = 4, xla_flags: str = "", init_timeout: int = 30, timeout: float = 600
) -> list[subprocess.CompletedProcess]:
    """Run `command` (an experiment CLI) as `processes` JAX processes of one run on localhost.

    Process i gets `--coordinator-address localhost:<free port> --num-processes <processes>
    --process-id i --init-timeout <init_timeout>` and `devices` CPU devices. All run at once;
    when one fails (or `timeout` passes) the others are killed at once, instead of waiting in a
    collective for a peer that is gone (JAX would abort them only after its 300 s shutdown
    barrier). Returns each process's result, in process order; output goes through temporary
    files, so a chatty process never blocks on a full pipe.
    """
    address = f"localhost:{free_port()}"
    env = cpu_devices_env(devices, xla_flags=xla_flags)
    outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(processes)]
    runs = [
        subprocess.Popen(
            [*command, "--coordinator-address", address, "--num-processes", str(processes), "--process-id", str(i), "--init-timeout", str(init_timeout)],
            stdout=out, stderr=err, text=True, env=env,
        )
        for i, (out, err) in enumerate(outputs)
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    while any(run.poll() is None for run in runs):
        if any(run.returncode for run in runs) or time.monotonic() > deadline:
            for run in runs:
                run.kill()
        time.sleep(0.05)
    return [subprocess.CompletedProcess(run.args, run.wait(), _read(out), _read(err)) for run, (out, err) in zip(runs, outputs)]


def _read(file) -> str:
    file.seek(0)
    text = file.read()
    file.close()
    return text
