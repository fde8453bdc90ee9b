"""The iteration loop: one jitted iteration, then metrics, a progress bar and a checkpoint.

A run is `M` independent members (one, the seeds of one setting, or a whole sweep) stacked
along a leading axis and advanced together by `jit(vmap(trainer.iterate))`. Training proceeds
in iterations; for PPO an iteration is a fixed number of updates, for the self-improvement
methods it is one generate -> label -> update -> evaluate round. After every iteration the
loop

1. appends the iteration's metrics `[M, U]` to the history and to `metrics.jsonl` and
   TensorBoard (one row per member and update),
2. advances a progress bar (iterations, env steps, steps/s, ETA, latest return),
3. saves an Orbax checkpoint (`jaxrl_si.checkpoint`) of everything needed to continue exactly:
   the stacked state (parameters, optimiser state, PRNG keys, environment and normalisation
   state, counters), the metric history, and the run's config as JSON.

`resume=True` restores the latest complete checkpoint, falling back past corrupt ones (which
are then deleted, so the recomputed iterations are saved in their place); it refuses one whose
config differs from the requested run, rewrites `metrics.jsonl` from the restored history and
continues. The result equals an uninterrupted run bit for bit on the same mesh. A fresh run
refuses a run directory that already holds checkpoints.

Several processes (a pod slice; `jaxrl_si.distributed`) run the same loop in step: the mesh
spans every process's devices, each process holds the shards on its own devices, the metrics
are gathered to every host, checkpoints are saved and restored by all processes together, and
only the main process writes `metrics.jsonl` and TensorBoard and shows the progress bar. The
run directory may be local or `gs://` (`jaxrl_si.paths`); a restore takes its shardings from the
current mesh, so a run may resume on another number of processes and devices.

`Trainer` is the adapter between an agent (`jaxrl_si/agents/README.md`: a frozen object with
`init`, `update` and a few sizes) and this loop; agents import nothing from here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PRNGKeyArray
from tqdm import tqdm

from jaxrl_si import checkpoint as ckpt
from jaxrl_si import metrics as stats
from jaxrl_si.distributed import is_main_process
from jaxrl_si.errors import ConfigError
from jaxrl_si.parallel import (
    batch_constraint,
    check_divides_data_axis,
    check_spans_processes,
    constrain_members,
    place,
    shard_members,
    to_host,
    vmap_members,
)
from jaxrl_si.paths import run_path
from jaxrl_si.sinks import MetricWriter, metric_row


class Agent(Protocol):
    """What the loop needs from an agent (e.g. `jaxrl_si.agents.ppo.PPO`)."""

    config: Any  # frozen dataclass of static settings, saved as JSON with each checkpoint
    num_updates: int  # updates in a whole run
    env_steps_per_update: int  # per member
    data_parallel_sizes: Mapping[str, int]  # sizes its layout hook splits over the `data` axis

    def init(self, hparams: Any, key: PRNGKeyArray) -> Any: ...

    def update(self, hparams: Any, state: Any) -> tuple[Any, dict[str, jax.Array]]: ...

    # Optional: `data`, a dataclass field holding a pytree of arrays that every member reads and
    # none changes (an offline dataset). The trainer passes it to the compiled programs as an
    # argument, unbatched (one copy for all members, replicated over a mesh), instead of letting
    # jit embed it in the program as a constant; it is not checkpointed.


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """An agent run in iterations of `updates_per_iteration` updates, members over `mesh`.

    `updates_per_iteration` must divide the agent's `num_updates`, so that every iteration runs
    the same compiled program and a checkpoint falls on each iteration boundary. With a mesh,
    the agent must have been built with `parallel.batch_constraint(mesh)` (`Trainer.build`
    does both). The compiled programs (`compiled`) belong to the trainer and are freed with it:
    there is no global cache, so build a trainer once and reuse it.
    """

    agent: Agent
    updates_per_iteration: int
    mesh: Mesh | None = None  # members over its `sweep` axis, the agent's batches over `data`
    return_metric: str = "episode/return"  # shown on the progress bar, scored by sweeps
    count_metric: str | None = "episode/count"  # weights `return_metric` when averaging
    data_per_member: bool = False  # the agent's `data` has a leading member axis (each member its own dataset)

    def __post_init__(self):
        num_updates = self.agent.num_updates
        if self.updates_per_iteration < 1 or num_updates % self.updates_per_iteration:
            divisors = [d for d in range(1, num_updates + 1) if num_updates % d == 0]
            raise ConfigError(
                f"updates_per_iteration={self.updates_per_iteration} must divide the run's {num_updates} updates; "
                f"choose one of {divisors}"
            )
        check_divides_data_axis(self.mesh, **self.agent.data_parallel_sizes)
        check_spans_processes(self.mesh)

    @classmethod
    def build(cls, build_agent: Callable[..., Agent], config: Any, updates_per_iteration: int, *, mesh: Mesh | None = None, **kwargs) -> Trainer:
        """`build_agent(config, constrain=batch_constraint(mesh))` in a trainer over the same mesh."""
        return cls(build_agent(config, constrain=batch_constraint(mesh)), updates_per_iteration, mesh, **kwargs)

    @property
    def config(self) -> Any:
        return self.agent.config

    @property
    def num_iterations(self) -> int:
        return self.agent.num_updates // self.updates_per_iteration

    @property
    def env_steps_per_update(self) -> int:
        return self.agent.env_steps_per_update

    def init(self, hparams: Any, key: PRNGKeyArray) -> Any:
        """One member's initial state."""
        return self.agent.init(hparams, key)

    def iterate(self, hparams: Any, state: Any) -> tuple[Any, dict[str, jax.Array]]:
        """One member's iteration: `updates_per_iteration` updates in a `lax.scan`; metrics `[U]`."""
        return jax.lax.scan(lambda s, _: self.agent.update(hparams, s), state, None, length=self.updates_per_iteration)

    @functools.cached_property
    def compiled(self) -> tuple[Callable, Callable]:
        """`jit(vmap(init))` and `jit(vmap(iterate))` over members (compiled at their first call).

        `init`'s state comes out laid out as an iteration leaves it (`constrain_members`), so
        `iterate` compiles once, not once for the first call and again for the rest.

        An agent's `data` goes in as an argument (bound here), so the programs hold no copy of
        it: a dataset closed over by jit would be baked into the program as a literal (measured
        on jax 0.10: a 32 MB array became 64 MB of HLO text). It is unbatched (one copy read by
        every member, replicated over a mesh) unless `data_per_member`, when its leading axis
        is the members' (sharded like them).
        """
        data = getattr(self.agent, "data", None)
        if data is None:
            init = vmap_members(self.init, self.mesh)
            return jax.jit(lambda *args: constrain_members(init(*args), self.mesh)), jax.jit(vmap_members(self.iterate, self.mesh))
        data_axis = 0 if self.data_per_member else None
        data = _place(data, self.mesh) if self.data_per_member else place(data, _sharding(self.mesh, P()))
        init, iterate = (vmap_members(self._reading(method), self.mesh, in_axes=(data_axis, 0, 0)) for method in (Trainer.init, Trainer.iterate))
        return functools.partial(jax.jit(lambda *args: constrain_members(init(*args), self.mesh)), data), functools.partial(jax.jit(iterate), data)

    def _reading(self, method: Callable) -> Callable:
        """`method(self, hparams, x)` as `fn(data, hparams, x)`, the agent rebound to the (traced) `data`."""

        def with_data(data, hparams, x):
            return method(dataclasses.replace(self, agent=dataclasses.replace(self.agent, data=data)), hparams, x)

        return with_data

    def check_members(self, members: int) -> None:
        """Raise `ConfigError` unless `members` divides over the mesh's `sweep` axis."""
        size = 1 if self.mesh is None else self.mesh.shape["sweep"]
        if members % size:
            raise ConfigError(f"{members} members do not divide over the mesh's sweep axis ({size} devices); change the seeds, the sweep or the mesh")


@dataclasses.dataclass(frozen=True)
class LoopResult:
    state: Any  # final stacked state, leaves `[M, ...]`
    history: dict[str, np.ndarray]  # metric -> `[M, num_iterations * updates_per_iteration]`
    resumed_from: int | None  # the iteration restored from, None for a fresh run
    seconds: float  # wall time of this call, compilation included


def run(
    trainer: Trainer,
    hparams: Any,
    keys: PRNGKeyArray,
    *,
    run_dir: str | os.PathLike,
    run_config: Mapping[str, Any] | None = None,
    member_labels: Sequence[Mapping[str, int] | None] | None = None,
    resume: bool = False,
    max_to_keep: int | None = 3,
    async_checkpoints: bool = True,
    desc: str = "train",
    on_start: Callable[[], None] | None = None,
    initial_state: Any | None = None,
    after_iteration: Callable[[int, Any], None] | None = None,
) -> LoopResult:
    """Train `M` members for `trainer.num_iterations` iterations, checkpointing each one.

    Args:
      trainer: the agent in iterations (see `Trainer`).
      hparams: the members' hyperparameters, every leaf `[M]`.
      keys: `[M]` typed PRNG keys, one per member.
      run_dir: receives `metrics.jsonl`, `tb/` and `checkpoints/<iteration>`; local or `gs://`.
      run_config: extra JSON describing the run; with the trainer's config, hyperparameters
        and keys it must match the checkpoint's on resume (mismatches name the fields).
      member_labels: per-member dicts added to each metric row (e.g. setting and seed index);
        None for a member whose rows are not written (padding).
      resume: continue from the latest complete checkpoint in `run_dir` if there is one.
      on_start: called once the starting point is settled (a fresh start, or a checkpoint that
        fits this run), before the loop writes to `run_dir`: e.g. to write the run's config.
      initial_state: the stacked state a fresh run starts from instead of `init` (e.g. where an
        earlier stage of training ended); a resume restores its checkpoint as usual.
      after_iteration: called as `after_iteration(iteration, state)` once an iteration's state
        exists and before its checkpoint is saved (e.g. to write the samples it trained on as a
        dataset): a run killed in between redoes the iteration and calls it again.

    Members are sharded over the `sweep` axis of `trainer.mesh` when it has one (the member
    count must divide it), else placed on the default device. Raises `ConfigError` (members
    that do not divide the mesh), `checkpoint.ConfigMismatchError` (a resume into another
    run's directory) and `checkpoint.ExistingRunError` (a fresh run into a directory that holds
    checkpoints) before anything is written.
    """
    start_time = time.perf_counter()
    run_dir = run_path(run_dir)
    trainer.check_members(len(keys))
    config = _checkpoint_config(trainer, hparams, keys, run_config)
    hparams, keys = _place((hparams, keys), trainer.mesh)
    labels = member_labels if member_labels is not None else [{} for _ in range(len(keys))]
    main = is_main_process()
    with ckpt.Checkpointer(run_dir / "checkpoints", max_to_keep=max_to_keep, async_save=async_checkpoints) as saver:
        start, state, history = _initial_state(trainer, hparams, keys, saver, config, resume, run_dir, initial_state)
        if on_start is not None:
            on_start()
        writer = MetricWriter(run_dir, group="member", resume_env_steps=_env_steps(trainer, start, 0) if start else None, active=main)
        _replay(writer, trainer, history, labels)
        _, iterate_members = trainer.compiled
        steps_per_iteration = trainer.updates_per_iteration * trainer.env_steps_per_update * len(keys)
        bar = tqdm(total=trainer.num_iterations * steps_per_iteration, initial=start * steps_per_iteration, unit="step", unit_scale=True, desc=desc, disable=not main)
        for iteration in range(start, trainer.num_iterations):
            state, metrics = iterate_members(hparams, state)
            metrics = to_host(metrics)  # blocks: one iteration in flight
            history = {k: np.concatenate([history[k], v], axis=1) if k in history else v for k, v in metrics.items()}
            latest = _log_iteration(writer, trainer, metrics, iteration, labels)
            if after_iteration is not None:
                after_iteration(iteration + 1, state)
            saver.save(iteration + 1, state, config=config, history=history, extra={"iteration": iteration + 1})
            bar.update(steps_per_iteration)
            bar.set_postfix(it=f"{iteration + 1}/{trainer.num_iterations}", ret=_format_return(latest))
        bar.close()
    writer.close()
    return LoopResult(state, history, start if resume and start else None, time.perf_counter() - start_time)


def _initial_state(trainer: Trainer, hparams, keys, saver: ckpt.Checkpointer, config: dict, resume: bool, run_dir, initial_state=None):
    """`(iteration, state, history)`: from the latest good checkpoint (newer, corrupt ones deleted), or fresh."""
    init_members, _ = trainer.compiled
    if not resume and saver.all_steps():
        raise ckpt.ExistingRunError(
            f"{saver.directory} holds checkpoints up to iteration {saver.all_steps()[-1]} of an earlier run; "
            f"resume it (resume=True, --resume) or choose another run directory"
        )
    if resume:
        target = ckpt.abstract_target(jax.eval_shape(init_members, hparams, keys), _sharding(trainer.mesh, P("sweep")))
        restored = saver.restore_latest(target, config=config)
        if restored is not None:
            saver.delete_steps_after(restored.step)
            if is_main_process():
                tqdm.write(f"resumed {run_dir} from the checkpoint of iteration {restored.step}/{trainer.num_iterations}", file=sys.stderr)
            return restored.step, restored.state, dict(restored.history)
    return 0, init_members(hparams, keys) if initial_state is None else _place(initial_state, trainer.mesh), {}


def _log_iteration(writer: MetricWriter, trainer: Trainer, metrics, iteration: int, labels) -> np.ndarray:
    """Rows to JSONL / TensorBoard, the cross-member mean return; returns `[M]` latest returns."""
    writer.write(_rows(trainer, metrics, iteration, labels))
    latest = iteration_returns(trainer, metrics)[:, -1]
    writer.write_summary(_env_steps(trainer, iteration + 1, 0), {trainer.return_metric: stats.mean_of_finite(latest)})
    return latest


def updates_per_iteration(num_updates: int, target_iterations: int) -> int:
    """Updates per iteration for about `target_iterations` iterations of a `num_updates` run.

    The smallest divisor of `num_updates` that is >= num_updates / target_iterations: every
    iteration then runs the same compiled program (e.g. 976 updates, 20 wanted: 16 of 61).
    """
    if isinstance(target_iterations, bool) or not isinstance(target_iterations, int) or target_iterations < 1:
        raise ConfigError(f"iterations must be a positive int, got {target_iterations!r}")
    lower = max(1, -(-num_updates // target_iterations))
    return next(d for d in range(lower, num_updates + 1) if num_updates % d == 0)


def returns_and_counts(trainer: Trainer, history: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`[M, U]` the trainer's return metric and the episode counts that weight it."""
    return stats.returns_and_counts(history, trainer.return_metric, trainer.count_metric)


def iteration_returns(trainer: Trainer, history: Mapping[str, np.ndarray]) -> np.ndarray:
    """`[M, iterations]` the return metric averaged (episode-weighted) over each iteration's updates."""
    return stats.iteration_returns(*returns_and_counts(trainer, history), trainer.updates_per_iteration)


def _format_return(latest: np.ndarray) -> str:
    mean = stats.mean_of_finite(latest)
    return f"{mean:.1f}" if np.isfinite(mean) else "-"


def _env_steps(trainer: Trainer, iteration: int, update: int) -> int:
    return (iteration * trainer.updates_per_iteration + update) * trainer.env_steps_per_update


def _rows(trainer: Trainer, metrics: Mapping[str, np.ndarray], iteration: int, labels) -> list[dict]:
    """One row per member and update of `iteration` (members labelled None are skipped)."""
    first_update = iteration * trainer.updates_per_iteration
    return [
        metric_row(
            {
                "member": member,
                **label,
                "iteration": iteration + 1,
                "update": first_update + update + 1,
                "env_steps": _env_steps(trainer, iteration, update + 1),
            },
            {k: v[member, update] for k, v in metrics.items()},
        )
        for member, label in enumerate(labels)
        if label is not None
        for update in range(trainer.updates_per_iteration)
    ]


def _replay(writer: MetricWriter, trainer: Trainer, history: Mapping[str, np.ndarray], labels) -> None:
    """Rewrite `metrics.jsonl` from a restored history (TensorBoard already holds those events)."""
    if not history:
        return
    done = next(iter(history.values())).shape[1] // trainer.updates_per_iteration
    for iteration in range(done):
        window = slice(iteration * trainer.updates_per_iteration, (iteration + 1) * trainer.updates_per_iteration)
        writer.write(_rows(trainer, {k: v[:, window] for k, v in history.items()}, iteration, labels), tensorboard=False)


def _place(tree, mesh: Mesh | None):
    if mesh is None:
        return jax.device_put(tree, SingleDeviceSharding(jax.devices()[0]))
    return shard_members(tree, mesh)


def _sharding(mesh: Mesh | None, spec: P):
    """`spec` over `mesh`, or the default device without a mesh."""
    return SingleDeviceSharding(jax.devices()[0]) if mesh is None else NamedSharding(mesh, spec)


def _checkpoint_config(trainer: Trainer, hparams, keys, run_config) -> dict:
    """What a checkpoint must agree on to be resumed: static config, members, iterations."""
    members = {name: value.tolist() for name, value in zip(_field_names(hparams), to_host(jax.tree.leaves(hparams)), strict=True)}
    return {
        "algorithm": type(trainer.config).__name__,
        "config": ckpt.json_value(dataclasses.asdict(trainer.config), stringify=True),
        "num_iterations": trainer.num_iterations,
        "updates_per_iteration": trainer.updates_per_iteration,
        "hparams": members,
        "keys": to_host(jax.random.key_data(keys)).tolist(),
        "run": ckpt.json_value(dict(run_config or {}), stringify=True),
    }


def _field_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
