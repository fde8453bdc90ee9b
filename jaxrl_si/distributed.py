"""Joining the processes of a multi-host run, and what each process does alone.

One experiment command runs unchanged on one CPU, one GPU, a TPU VM and a multi-host pod
slice: every host runs the same program (JAX's multi-controller model), `jax.distributed.
initialize` joins them, and from then on `jax.devices()` lists every process's devices, a mesh
spans them all and each process holds only the shards on its own devices.

    launch = Launch(coordinator_address="10.0.0.2:1234", num_processes=2, process_id=0)
    initialize(launch)            # before JAX runs anything, on every process
    if is_main_process(): ...     # files, progress bars, printing

- `Launch()` (the default): one process, nothing to join.
- `Launch(distributed=True)`: JAX detects the cluster (Cloud TPU pod slices, SLURM, Open MPI,
  Kubernetes) and fills in the coordinator, the process count and this process's id.
- `Launch(coordinator_address=..., num_processes=..., process_id=...)`: explicit, e.g. several
  processes on one machine (tests) or hosts that JAX cannot detect. With `distributed=True` as
  well, the given values override what detection finds.

A process whose peers do not all arrive within `init_timeout` seconds is aborted by JAX's
coordination service (SIGABRT, `DEADLINE_EXCEEDED`; no Python exception can be caught), so a
missing worker ends the run instead of hanging it.

After initialization the processes must stay in step: every process makes the same jitted
calls, collectives and checkpoint saves in the same order. Only the side effects that would
otherwise happen once per host (writing files, the progress bar, printing) are left to the main
process (`is_main_process`).
"""

from __future__ import annotations

import dataclasses

import jax

from jaxrl_si.errors import ConfigError

_EXPLICIT = ("coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins a multi-process run (the `--distributed`, `--coordinator-address`, ... flags)."""

    distributed: bool = False  # join a multi-process run; the cluster (TPU pod slice, SLURM, ...) is auto-detected
    coordinator_address: str | None = None  # HOST:PORT of process 0's coordination service (explicit launch)
    num_processes: int | None = None  # processes in the run (explicit launch)
    process_id: int | None = None  # this process's index in [0, num_processes) (explicit launch)
    init_timeout: int = 300  # seconds to wait for every process to join before aborting

    @property
    def joins(self) -> bool:
        """Whether this process joins a multi-process run (any flag set)."""
        return self.distributed or any(getattr(self, name) is not None for name in _EXPLICIT)


def check_launch(launch: Launch) -> None:
    """Raise `ConfigError` naming the flags that make `launch` invalid.

    Without `distributed`, the three explicit values go together; `process_id` must lie in
    `[0, num_processes)`; the timeout must be positive.
    """
    missing = [name for name in _EXPLICIT if getattr(launch, name) is None]
    if not launch.distributed and 0 < len(missing) < len(_EXPLICIT):
        given = [f"--{name.replace('_', '-')}" for name in _EXPLICIT if name not in missing]
        needed = [f"--{name.replace('_', '-')}" for name in missing]
        raise ConfigError(f"{', '.join(given)} also needs {', '.join(needed)} (or --distributed to auto-detect the rest)")
    count, index = launch.num_processes, launch.process_id
    if count is not None and count < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {count}")
    if index is not None and count is not None and not 0 <= index < count:
        raise ConfigError(f"--process-id {index} is not in [0, {count}) (--num-processes {count})")
    if index is not None and index < 0:
        raise ConfigError(f"--process-id must be at least 0, got {index}")
    if launch.coordinator_address is not None and not launch.coordinator_address.rpartition(":")[2].isdigit():
        raise ConfigError(f"--coordinator-address must be HOST:PORT, got {launch.coordinator_address!r}")
    if launch.init_timeout < 1:
        raise ConfigError(f"--init-timeout must be a positive number of seconds, got {launch.init_timeout}")


def initialize(launch: Launch) -> None:
    """Join the multi-process run `launch` describes (nothing for a single-process launch).

    Must run before JAX does anything (even `jax.devices()`). Raises `ConfigError` for invalid
    flags, and when `--distributed` finds no cluster to join.
    """
    check_launch(launch)
    if not launch.joins:
        return
    try:
        jax.distributed.initialize(
            launch.coordinator_address,
            launch.num_processes,
            launch.process_id,
            initialization_timeout=launch.init_timeout,
        )
    except ValueError as error:  # e.g. auto-detection found no cluster and no coordinator was given
        hint = "; outside TPU pod slices and SLURM pass --coordinator-address, --num-processes and --process-id"
        raise ConfigError(f"cannot join the multi-process run ({str(error).rstrip('.')}){hint if launch.coordinator_address is None else ''}") from None


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes files, shows progress and prints."""
    return jax.process_index() == 0
