"""Train PPO: `python -m experiments.ppo [--config.env gymnax:CartPole-v1] [--seeds 8] ...`.

All seeds run as one vmapped, jitted program, in chunks of updates so that a progress bar,
JSONL / TensorBoard metrics and the learning-curve plot update as training goes. Every field
of the config and the hyperparameters is a flag (`--help` lists them); unknown flags are errors.

Writes to `--run-dir`: `config.json`, `metrics.jsonl` (one row per update and seed), `tb/`
(TensorBoard), `learning_curve.png`, and `summary.json` (final return per seed).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
import tyro
from tqdm import tqdm

from jaxrl_si.agents.ppo import PPOConfig, PPOHyperparams, init, run_updates
from jaxrl_si.logging import MetricWriter, final_episode_return, plot_learning_curves


@dataclasses.dataclass(frozen=True)
class RunConfig:
    config: PPOConfig = PPOConfig()  # static settings (env, sizes, counts)
    hparams: PPOHyperparams = PPOHyperparams()  # dynamic hyperparameters (traced pytree leaves)
    seeds: int = 1  # independent seeds, vmapped in one program
    seed: int = 0  # base PRNG seed
    run_dir: pathlib.Path = pathlib.Path("runs/ppo")  # outputs (created)
    log_chunks: int = 20  # the run is split into about this many jitted chunks for logging
    final_window: int = 20  # updates averaged for the final return


def chunk_size(num_updates: int, target_chunks: int) -> int:
    """The smallest divisor of `num_updates` >= num_updates / target_chunks (one compiled chunk)."""
    lower = max(1, -(-num_updates // max(target_chunks, 1)))
    return next(d for d in range(lower, num_updates + 1) if num_updates % d == 0)


def _rows(metrics: dict[str, np.ndarray], first_update: int, batch_size: int) -> list[dict]:
    seeds, updates = next(iter(metrics.values())).shape
    rows = []
    for s in range(seeds):
        for u in range(updates):
            step = first_update + u + 1
            rows.append({"seed": s, "update": step, "env_steps": step * batch_size, **{k: v[s, u] for k, v in metrics.items()}})
    return rows


def main(run: RunConfig) -> dict:
    config, hparams = run.config, run.hparams
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(run), default=str, indent=2))
    per_chunk = chunk_size(config.num_updates, run.log_chunks)
    keys = jax.random.split(jax.random.key(run.seed), run.seeds)
    init_seeds = jax.jit(jax.vmap(lambda key: init(config, hparams, key)))
    run_chunk = jax.jit(jax.vmap(lambda state: run_updates(config, hparams, state, per_chunk)))

    writer = MetricWriter(run.run_dir)
    history: dict[str, list[np.ndarray]] = {}
    state = init_seeds(keys)
    start = time.perf_counter()
    with tqdm(total=config.num_updates * config.batch_size * run.seeds, unit="step", unit_scale=True, desc="PPO") as bar:
        for chunk in range(config.num_updates // per_chunk):
            state, metrics = run_chunk(state)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            writer.write(_rows(metrics, chunk * per_chunk, config.batch_size))
            latest = final_episode_return(metrics["episode/return"], metrics["episode/count"], per_chunk)
            writer.write_summary((chunk + 1) * per_chunk * config.batch_size, {"episode/return": float(latest.mean())})
            bar.update(per_chunk * config.batch_size * run.seeds)
            bar.set_postfix(ret=f"{latest.mean():.1f}")
    writer.close()
    seconds = time.perf_counter() - start

    returns = np.concatenate(history["episode/return"], axis=1)
    counts = np.concatenate(history["episode/count"], axis=1)
    env_steps = np.arange(1, returns.shape[1] + 1) * config.batch_size
    plot_learning_curves({config.env: (env_steps, returns)}, run.run_dir / "learning_curve.png", title=f"PPO on {config.env}")
    final = final_episode_return(returns, counts, run.final_window)
    summary = {
        "env": config.env,
        "seeds": run.seeds,
        "env_steps_per_seed": int(env_steps[-1]),
        "final_return_per_seed": [round(float(x), 2) for x in final],
        "final_return_mean": round(float(final.mean()), 2),
        "wall_s_including_compile": round(seconds, 1),
    }
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(tyro.cli(RunConfig))
