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

`resume=True` restores the latest complete checkpoint (falling back past corrupt ones), refuses
one whose config differs from the requested run, rewrites `metrics.jsonl` from the restored
history and continues; the result equals an uninterrupted run bit for bit on the same mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import PRNGKeyArray
from tqdm import tqdm

from jaxrl_si import checkpoint as ckpt
from jaxrl_si.logging import MetricWriter, final_episode_return
from jaxrl_si.parallel import shard_members, vmap_members


@dataclasses.dataclass(frozen=True)
class Trainer:
    """An algorithm as the loop sees it: pure functions of one member's hyperparameters.

    `init(hparams, key) -> state` and `iterate(hparams, state) -> (state, metrics)`, where each
    metric is an array `[updates_per_iteration]`. Both are traceable and unbatched: the loop
    vmaps them over members and jits them. Build trainers once (e.g. `functools.cache` on
    the static config), since compiled programs are cached on the trainer's identity.
    """

    config: Any  # frozen dataclass of static settings, saved as JSON with each checkpoint
    init: Callable[[Any, PRNGKeyArray], Any]
    iterate: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]]
    num_iterations: int
    updates_per_iteration: int
    env_steps_per_update: int  # per member
    return_metric: str = "episode/return"  # shown on the progress bar, scored by sweeps
    count_metric: str | None = "episode/count"  # weights `return_metric` when averaging
    mesh: Mesh | None = None  # the mesh the trainer's functions were built for, if any


@dataclasses.dataclass(frozen=True)
class LoopResult:
    state: Any  # final stacked state, leaves `[M, ...]`
    history: dict[str, np.ndarray]  # metric -> `[M, num_iterations * updates_per_iteration]`
    resumed_from: int | None  # the iteration restored from, None for a fresh run
    seconds: float  # wall time of this call, compilation included


@functools.cache
def compiled_members(trainer: Trainer) -> tuple[Callable, Callable]:
    """`jit(vmap(init))` and `jit(vmap(iterate))` over members (cached per trainer)."""
    return jax.jit(vmap_members(trainer.init, trainer.mesh)), jax.jit(vmap_members(trainer.iterate, trainer.mesh))


def run(
    trainer: Trainer,
    hparams: Any,
    keys: PRNGKeyArray,
    *,
    run_dir: str | pathlib.Path,
    run_config: Mapping[str, Any] | None = None,
    member_labels: Sequence[Mapping[str, int]] | None = None,
    resume: bool = False,
    max_to_keep: int | None = 3,
    async_checkpoints: bool = True,
    desc: str = "train",
) -> LoopResult:
    """Train `M` members for `trainer.num_iterations` iterations, checkpointing each one.

    Args:
      trainer: the algorithm (see `Trainer`).
      hparams: the members' hyperparameters, every leaf `[M]`.
      keys: `[M]` typed PRNG keys, one per member.
      run_dir: receives `metrics.jsonl`, `tb/` and `checkpoints/<iteration>`.
      run_config: extra JSON describing the run; with the trainer's config, hyperparameters
        and keys it must match the checkpoint's on resume (mismatches name the fields).
      member_labels: per-member dicts added to each metric row (e.g. setting and seed index);
        None for a member whose rows are not written (padding).
      resume: continue from the latest complete checkpoint in `run_dir` if there is one.

    Members are sharded over the `sweep` axis of `trainer.mesh` when it has one (the member
    count must divide it), else placed on the default device.
    """
    start_time = time.perf_counter()
    run_dir = pathlib.Path(run_dir)
    members = len(keys)
    hparams, keys = _place((hparams, keys), trainer.mesh)
    config = _checkpoint_config(trainer, hparams, keys, run_config)
    labels = member_labels if member_labels is not None else [{} for _ in range(members)]
    with ckpt.Checkpointer(run_dir / "checkpoints", max_to_keep=max_to_keep, async_save=async_checkpoints) as saver:
        start, state, history = _initial_state(trainer, hparams, keys, saver, config, resume, run_dir)
        writer = MetricWriter(run_dir, group="member", resume_env_steps=_env_steps(trainer, start, 0) if start else None)
        _replay(writer, trainer, history, labels)
        _, iterate_members = compiled_members(trainer)
        steps_per_iteration = trainer.updates_per_iteration * trainer.env_steps_per_update * members
        bar = tqdm(total=trainer.num_iterations * steps_per_iteration, initial=start * steps_per_iteration, unit="step", unit_scale=True, desc=desc)
        for iteration in range(start, trainer.num_iterations):
            state, metrics = iterate_members(hparams, state)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}  # blocks: one iteration in flight
            history = {k: np.concatenate([history[k], v], axis=1) if k in history else v for k, v in metrics.items()}
            latest = _log_iteration(writer, trainer, metrics, iteration, labels)
            saver.save(iteration + 1, state, config=config, history=history, extra={"iteration": iteration + 1})
            bar.update(steps_per_iteration)
            bar.set_postfix(it=f"{iteration + 1}/{trainer.num_iterations}", ret=_format_return(latest))
        bar.close()
    writer.close()
    return LoopResult(state, history, start if resume and start else None, time.perf_counter() - start_time)


def _initial_state(trainer: Trainer, hparams, keys, saver: ckpt.Checkpointer, config: dict, resume: bool, run_dir):
    """`(iteration, state, history)`: from the latest complete checkpoint, or fresh."""
    init_members, _ = compiled_members(trainer)
    if resume:
        target = ckpt.abstract_target(jax.eval_shape(init_members, hparams, keys), _member_sharding(trainer.mesh))
        restored = saver.restore_latest(target, config=config)
        if restored is not None:
            tqdm.write(f"resumed {run_dir} from the checkpoint of iteration {restored.step}/{trainer.num_iterations}", file=sys.stderr)
            return restored.step, restored.state, dict(restored.history)
    return 0, init_members(hparams, keys), {}


def _log_iteration(writer: MetricWriter, trainer: Trainer, metrics, iteration: int, labels) -> np.ndarray:
    """Rows to JSONL / TensorBoard, the cross-member mean return; returns `[M]` latest returns."""
    writer.write(_rows(trainer, metrics, iteration, labels))
    latest = _iteration_return(trainer, metrics)
    writer.write_summary(_env_steps(trainer, iteration + 1, 0), {trainer.return_metric: _mean_of_finite(latest)})
    return latest


def updates_per_iteration(num_updates: int, target_iterations: int) -> int:
    """Updates per iteration for about `target_iterations` iterations of a `num_updates` run.

    The smallest divisor of `num_updates` that is >= num_updates / target_iterations: every
    iteration then runs the same compiled program (e.g. 976 updates, 20 wanted: 16 of 61).
    """
    lower = max(1, -(-num_updates // max(target_iterations, 1)))
    return next(d for d in range(lower, num_updates + 1) if num_updates % d == 0)


def iteration_returns(trainer: Trainer, history: Mapping[str, np.ndarray]) -> np.ndarray:
    """`[M, iterations]` the return metric averaged over each iteration's updates.

    Weighted by `count_metric` (episodes that ended) when the trainer has one; NaN where no
    episode ended in an iteration.
    """
    returns, counts = returns_and_counts(trainer, history)
    flat = lambda x: x.reshape(-1, trainer.updates_per_iteration)
    return final_episode_return(flat(returns), flat(counts), trainer.updates_per_iteration).reshape(returns.shape[0], -1)


def returns_and_counts(trainer: Trainer, history: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`[M, U]` returns and the episode counts that weight them (1 per finite return if untracked)."""
    returns = history[trainer.return_metric]
    if trainer.count_metric is None:
        return returns, np.isfinite(returns).astype(np.float32)
    return returns, history[trainer.count_metric]


def _iteration_return(trainer: Trainer, metrics: Mapping[str, np.ndarray]) -> np.ndarray:
    return iteration_returns(trainer, metrics)[:, -1]


def _mean_of_finite(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _format_return(latest: np.ndarray) -> str:
    mean = _mean_of_finite(latest)
    return f"{mean:.1f}" if np.isfinite(mean) else "-"


def _env_steps(trainer: Trainer, iteration: int, update: int) -> int:
    return (iteration * trainer.updates_per_iteration + update) * trainer.env_steps_per_update


def _rows(trainer: Trainer, metrics: Mapping[str, np.ndarray], iteration: int, labels) -> list[dict]:
    """One row per member and update of `iteration`."""
    rows = []
    for member, label in enumerate(labels):
        if label is None:
            continue
        for update in range(trainer.updates_per_iteration):
            rows.append(
                {
                    "member": member,
                    **label,
                    "iteration": iteration + 1,
                    "update": iteration * trainer.updates_per_iteration + update + 1,
                    "env_steps": _env_steps(trainer, iteration, update + 1),
                    **{k: v[member, update] for k, v in metrics.items()},
                }
            )
    return rows


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


def _member_sharding(mesh: Mesh | None):
    return SingleDeviceSharding(jax.devices()[0]) if mesh is None else NamedSharding(mesh, P("sweep"))


def _checkpoint_config(trainer: Trainer, hparams, keys, run_config) -> dict:
    """What a checkpoint must agree on to be resumed: static config, members, iterations."""
    members = {
        name: np.asarray(value).tolist()
        for name, value in zip(_field_names(hparams), jax.tree.leaves(hparams), strict=True)
    }
    return {
        "algorithm": type(trainer.config).__name__,
        "config": json_safe(dataclasses.asdict(trainer.config)),
        "num_iterations": trainer.num_iterations,
        "updates_per_iteration": trainer.updates_per_iteration,
        "hparams": members,
        "keys": np.asarray(jax.random.key_data(keys)).tolist(),
        "run": json_safe(dict(run_config or {})),
    }


def _field_names(tree) -> list[str]:
    return [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def json_safe(value):
    """Tuples to lists and paths to strings, recursively, so a config compares equal after JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)
