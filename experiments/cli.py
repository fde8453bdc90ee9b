"""What every experiment's command line shares: a typed config from flags, and one line per user mistake.

    if __name__ == "__main__":
        cli.main(RunConfig, run)

`tyro` turns the frozen config dataclass into flags (every field, nested ones as
`--config.num-envs`; unknown flags are refused with usage). A mistake in what the user asked
for, found while parsing or running, is printed as one line on stderr, `error: ...`, with exit
status 2: an invalid setting (`ConfigError`: an unknown name, a size that does not divide, a
malformed sweep), a missing optional backend, a checkpoint that does not fit the run. Any
other exception is a bug and keeps its traceback.

Every command also takes the flags of `jaxrl_si.distributed.Launch`, without its config
declaring them: `--distributed` (join a multi-process run, the cluster auto-detected: TPU pod
slices, SLURM) or `--coordinator-address HOST:PORT --num-processes N --process-id I`, and
`--init-timeout SECONDS`. Every process of a pod or SLURM job runs the same command:

    python -m experiments.ppo --seeds 8 --distributed --run-dir gs://BUCKET/ppo --resume   # each TPU worker
    srun python -m experiments.ppo --seeds 8 --distributed                                # SLURM

A `run_dir` field typed `RunDir` takes a local path or a `gs://` URL (`jaxrl_si.paths`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import jax
import tyro
from etils import epath

from jaxrl_si import loop
from jaxrl_si.checkpoint import CheckpointError, ExistingRunError, json_value
from jaxrl_si.distributed import Launch, initialize, is_main_process
from jaxrl_si.envs import MissingBackendError
from jaxrl_si.errors import ConfigError
from jaxrl_si.parallel import default_mesh, make_mesh

USER_ERRORS = (ConfigError, CheckpointError, MissingBackendError)

Config = TypeVar("Config")

RunDir = Annotated[
    epath.Path,
    tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="PATH|gs://BUCKET/PATH",
        instance_from_str=lambda args: epath.Path(args[0]),
        is_instance=lambda value: isinstance(value, epath.Path),
        str_from_instance=lambda path: [str(path)],
    ),
]  # a run directory flag: `pathlib.Path` would read gs://bucket/x as gs:/bucket/x


def main(
    config_type: type[Config],
    run: Callable[[Config], Any],
    *,
    before_run: Callable[[Config], None] | None = None,
    args: Sequence[str] | None = None,
) -> Any:
    """Parse `config_type` and the `Launch` flags from `args` (default: `sys.argv`), call
    `before_run`, join the processes of a multi-process launch, then call `run(config)`.

    `before_run` is for what must happen before JAX starts (e.g. choosing the CPU device
    count). Returns what `run` returns; exits with status 2 and one line on stderr for the
    errors in `USER_ERRORS`.
    """
    try:
        command = tyro.cli(_command_type(config_type), args=args)
        if before_run is not None:
            before_run(command.run)
        initialize(command.launch)
        return run(command.run)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def _command_type(config_type: type[Config]) -> type:
    """A frozen dataclass `(run: config_type, launch: Launch)` whose flags are both classes' fields, unprefixed."""
    unprefixed = tyro.conf.arg(name="")
    return dataclasses.make_dataclass(
        config_type.__name__,
        [
            ("run", Annotated[config_type, unprefixed], dataclasses.field(default_factory=config_type)),
            ("launch", Annotated[Launch, unprefixed], dataclasses.field(default_factory=Launch)),
        ],
        frozen=True,
    )


def one_line(error: BaseException) -> str:
    """The error's message with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(error).split()) or type(error).__name__


def trainer_for(build_agent: Callable[..., Any], config: Any, *, members: int, mesh: tuple[int, int] | None, iterations: int) -> loop.Trainer:
    """The trainer of a command line: `members` over the `(sweep, data)` mesh asked for, or by
    default over as many devices as divide them; about `iterations` iterations. Prints the layout."""
    device_mesh = default_mesh(members) if mesh is None else make_mesh(*mesh)
    trainer = loop.Trainer.build(build_agent, config, loop.updates_per_iteration(config.num_updates, iterations), mesh=device_mesh)
    layout = dict(device_mesh.shape) if device_mesh else "one device"
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    if is_main_process():
        print(f"mesh: {layout} of {jax.device_count()} {jax.default_backend()} devices{processes} ({members} members)")
    return trainer


def write_run_config(run: Any) -> None:
    """`run.run_dir/config.json`: every field of the command line's config, as JSON (main process only)."""
    if not is_main_process():
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.json").write_text(json.dumps(json_value(dataclasses.asdict(run), stringify=True), indent=2))


def read_or_make_dataset(run: Any, make: Callable[[Any], None]):
    """The run's dataset as `(data, metadata)` (`jaxrl_si.data.tfds_io`): `run.dataset` if given; else the
    one an earlier run made in `run.run_dir/dataset` (only with `run.resume`); else `make(directory)`
    writes it there first. Read back from disk either way, so a resumed run learns from the same bytes."""
    from jaxrl_si.data import tfds_io

    if run.dataset is not None:
        return tfds_io.read_dataset(run.dataset)
    directory = run.run_dir / "dataset"
    if tfds_io.versions(directory):
        if not run.resume:
            raise ExistingRunError(f"{directory} holds the dataset of an earlier run; resume it (--resume) or choose another --run-dir")
        return tfds_io.read_dataset(directory)
    make(directory)
    return tfds_io.read_dataset(directory)
