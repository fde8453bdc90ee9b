"""What every experiment's command line shares: a typed config from flags, and one line per user mistake.

    if __name__ == "__main__":
        cli.main(RunConfig, run)

`tyro` turns the frozen config dataclass into flags (every field, nested ones as
`--config.num-envs`; unknown flags are refused with usage). A mistake in what the user asked
for, found while parsing or running, is printed as one line on stderr, `error: ...`, with exit
status 2: an invalid setting (`ConfigError`: an unknown name, a size that does not divide, a
malformed sweep), a missing optional backend, a checkpoint that does not fit the run. Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import tyro

from jaxrl_si import loop
from jaxrl_si.checkpoint import CheckpointError, ExistingRunError, json_value
from jaxrl_si.envs import MissingBackendError
from jaxrl_si.errors import ConfigError
from jaxrl_si.parallel import default_mesh, make_mesh

USER_ERRORS = (ConfigError, CheckpointError, MissingBackendError)

Config = TypeVar("Config")


def main(
    config_type: type[Config],
    run: Callable[[Config], Any],
    *,
    before_run: Callable[[Config], None] | None = None,
    args: Sequence[str] | None = None,
) -> Any:
    """Parse `config_type` from `args` (default: `sys.argv`), call `before_run`, then `run`.

    `before_run` is for what must happen before JAX starts (e.g. choosing the CPU device
    count). Returns what `run` returns; exits with status 2 and one line on stderr for the
    errors in `USER_ERRORS`.
    """
    try:
        config = tyro.cli(config_type, args=args)
        if before_run is not None:
            before_run(config)
        return run(config)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(error: BaseException) -> str:
    """The error's message with its whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(error).split()) or type(error).__name__


def trainer_for(build_agent: Callable[..., Any], config: Any, *, members: int, mesh: tuple[int, int] | None, iterations: int) -> loop.Trainer:
    """The trainer of a command line: `members` over the `(sweep, data)` mesh asked for, or by
    default over as many devices as divide them; about `iterations` iterations. Prints the layout."""
    device_mesh = default_mesh(members) if mesh is None else make_mesh(*mesh)
    trainer = loop.Trainer.build(build_agent, config, loop.updates_per_iteration(config.num_updates, iterations), mesh=device_mesh)
    layout = dict(device_mesh.shape) if device_mesh else "one device"
    print(f"mesh: {layout} of {jax.device_count()} {jax.default_backend()} devices ({members} members)")
    return trainer


def write_run_config(run: Any) -> None:
    """`run.run_dir/config.json`: every field of the command line's config, as JSON."""
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
