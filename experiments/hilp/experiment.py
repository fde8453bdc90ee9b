"""HILP against a random φ and no representation, on unlabelled exploratory data of a point maze.

    python -m experiments.hilp                                     # 3 representations x 4 seeds on maze:medium
    python -m experiments.hilp --representations hilbert --sweep "expectile=0.7,0.95"
    python -m experiments.hilp --dataset runs/hilp/dataset --resume

First the dataset: unless `--dataset` names one, `--data` (a `data.explore.ExploreConfig`: random
actions held for `action_repeat` steps from uniformly drawn start cells) is generated as one
jitted program, written to `run_dir/dataset` (TFDS `array_record`) and read back from there, also
on `--resume`. Every task's reward is kept in the data's `features`, read only by the reward
prompt. Then each representation (`hilbert`: HILP's φ; `random`: φ left at its initialisation;
`identity`: φ(s) = s) trains φ and the latent-conditioned policy (`agents.hilp`) as one vmapped
program over `--seeds` (and `--sweep`), checkpointed every iteration in `run_dir/<representation>/`.

Every update evaluates every prompt (goal, plan, reward, random) on every task of the maze and
the Spearman correlation of ‖φ(s) − φ(g)‖ with the true shortest-path distance. Writes
`results.json` / `results.md` (the final evaluation: mean and 95 % interval over seeds) and
`curves.png` (goal and planned-goal success, reward-prompt return and Spearman ρ against gradient
steps) and
`phi.png` (the maze and a goal-prompted episode, in (x, y) and in HILP's φ).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from tqdm import tqdm

from experiments import cli
from experiments.report import format_interval, mean_interval
from jaxrl_si import checkpoint, plots, sweep
from jaxrl_si.agents.hilp import (
    HILP,
    PROMPTS,
    REPRESENTATIONS,
    HILPConfig,
    HILPHyperparams,
)
from jaxrl_si.data.explore import ExploreConfig
from jaxrl_si.envs.maze import shortest_path_lengths
from jaxrl_si.errors import ConfigError
from jaxrl_si.losses import goal_latent

# CPU scale: the code's 1M steps at batch 1024 on 512 x 3 MLPs (d = 32, lr 3e-4), scaled to 20k
# steps at batch 256 on 128 x 2 with lr 1e-3; d = 8 for a 2-D maze; planning over 5k dataset
# states instead of 50k. The reward prompt regresses on centred φ(s') with a ridge of 0.1: least
# squares (the paper's, ridge 0) fails once d exceeds the maze's 2 dimensions (README).
CPU_HILP = HILPConfig(
    hidden_sizes=(128, 128), latent_dim=8, batch_size=256, total_steps=20_000, steps_per_update=2_000, eval_episodes=10,
    eval_horizon=200, reward_samples=10_000, reward_features="state", planning_states=5_000, num_neighbours=50, num_recursions=3,
)  # fmt: skip
CPU_HPARAMS = HILPHyperparams(learning_rate=1e-3, reward_ridge=0.1)
CPU_DATA = ExploreConfig(env="maze:medium", method="random", num_episodes=500, episode_length=200, action_repeat=4)
CURVES = ("goal/success", "plan/success", "reward/return", "phi/spearman")
FINAL_METRICS = ("goal/success", "plan/success", "reward/success", "reward/return", "random/success", "random/return", "phi/spearman")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: ExploreConfig = CPU_DATA  # how the dataset is made when --dataset is not given
    dataset: pathlib.Path | None = None  # an existing dataset directory (data.tfds_io) with the env's task rewards in `features`
    representations: tuple[str, ...] = REPRESENTATIONS
    hilp: HILPConfig = CPU_HILP
    hparams: HILPHyperparams = CPU_HPARAMS
    sweep: str = ""  # hyperparameters crossed with the seeds of every representation
    seeds: int = 4
    seed: int = 0
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core
    iterations: int = 10  # checkpoints per representation
    resume: bool = False
    run_dir: cli.RunDir = epath.Path("runs/hilp")


def main(run: RunConfig) -> dict:
    if set(run.representations) - set(REPRESENTATIONS) or not run.representations:
        raise ConfigError(f"--representations must name some of {REPRESENTATIONS}, got {list(run.representations)}")
    if run.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {run.seeds}")
    data, metadata = load_or_generate(run)
    episodes = jax.device_put(data.episodes)
    spec = sweep.parse_spec(run.sweep)
    rows, curves = [], {}
    for index, representation in enumerate(run.representations):
        config = dataclasses.replace(run.hilp, env=metadata.env_name, representation=representation)
        trainer = cli.trainer_for(
            functools.partial(HILP.build, data=episodes), config, members=len(sweep.settings(spec)) * run.seeds, mesh=run.mesh, iterations=run.iterations
        )
        result = sweep.run(
            trainer, spec, base_hparams=run.hparams, run_dir=run.run_dir / representation, seeds=run.seeds, seed=run.seed, final_window=1,
            resume=run.resume, run_config={"dataset": metadata.to_json()},
            on_start=functools.partial(cli.write_run_config, run) if index == 0 else None,
        )  # fmt: skip
        rows += _rows(representation, trainer, result, run)
        curves[representation] = {name: result.history[name] for name in CURVES if name in result.history}
        if representation == "hilbert":
            plot_phi(trainer.agent, first_member_state(trainer, run), run.run_dir / "phi.png")
    summary = _write(run, metadata, rows, curves)
    print(markdown(rows), end="")
    return summary


def load_or_generate(run):
    """The dataset: `--dataset`, or the one this run made in `run_dir/dataset`, or a new one from `run.data`."""
    return cli.read_or_make_dataset(run, functools.partial(_explore, run.data))


def _explore(config: ExploreConfig, directory: pathlib.Path) -> None:
    from jaxrl_si.data import explore, tfds_io

    with tqdm(total=config.chunks, desc=f"{config.method} data on {config.env}", unit="chunk") as bar:
        data = explore.generate_exploratory(config, progress=lambda done, total, metrics: bar.update(done - bar.n))
    tfds_io.write_dataset(directory, *data)


def _rows(representation: str, trainer, result: sweep.SweepResult, run: RunConfig) -> list[dict[str, Any]]:
    rows = []
    for index, setting in enumerate(result.settings):
        members = slice(index * run.seeds, (index + 1) * run.seeds)
        final = {name: mean_interval(result.history[name][members, -1]) for name in FINAL_METRICS if name in result.history}
        rows.append({
            "representation": representation, "setting": ", ".join(f"{k}={v:g}" for k, v in setting.items()), **final,
            "parameters": trainer.agent.parameter_count(), "gradient_steps": trainer.agent.config.total_steps,
            "wall_s_including_compile": round(result.seconds, 1),
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    names = [name for name in FINAL_METRICS if any(name in r for r in rows)]
    lines = ["| φ | setting | " + " | ".join(names) + " | wall s (with compile) |", "|---|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        cells = " | ".join(format_interval(r[name], digits=1 if name.endswith("return") else 3) if name in r else "-" for name in names)
        lines.append(f"| {r['representation']} | {r['setting'] or '-'} | {cells} | {r['wall_s_including_compile']} |")
    return "\n".join(lines) + "\n"


def _write(run: RunConfig, metadata, rows, curves) -> dict[str, Any]:
    summary = {"env": metadata.env_name, "seeds": run.seeds, "prompts": PROMPTS, "dataset": metadata.to_json(), "table": rows}
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=1, default=float))
    (run.run_dir / "results.md").write_text(markdown(rows))
    steps = np.arange(1, next(iter(next(iter(curves.values())).values())).shape[1] + 1) * run.hilp.steps_per_update
    panels = {metric: {rep: values[metric] for rep, values in curves.items() if metric in values} for metric in CURVES}
    plots.plot_interval_panels(
        steps, {name: panel for name, panel in panels.items() if panel}, run.run_dir / "curves.png", xlabel="gradient steps",
        ylabel="", sharey=False, title=f"{metadata.env_name}: HILP and baselines, mean and 95% interval over {run.seeds} seeds",
    )  # fmt: skip
    return summary


def first_member_state(trainer, run: RunConfig):
    """The first member's state at the last checkpoint of `run_dir/hilbert`."""
    members = len(sweep.settings(sweep.parse_spec(run.sweep))) * run.seeds
    shapes = jax.eval_shape(jax.vmap(trainer.agent.init, in_axes=(None, 0)), run.hparams, jax.random.split(jax.random.key(0), members))
    with checkpoint.Checkpointer(run.run_dir / "hilbert" / "checkpoints", async_save=False) as saver:
        state = saver.restore(saver.latest_step(), checkpoint.abstract_target(shapes)).state
    return jax.tree.map(lambda leaf: leaf[0], state)


def goal_trajectory(agent: HILP, state, task: int, key) -> np.ndarray:
    """Observations `[horizon + 1, D]` of one goal-prompted episode of `task` (z recomputed every step)."""
    env = agent.env
    phi_goal = agent.represent(state.params, env.goal_observations[task])

    def step(carry, key):
        env_state, obs = carry
        latent = goal_latent(agent.represent(state.params, obs), phi_goal)
        env_state, ts = env.step(env_state, agent.act(state, obs, latent), key)
        return (env_state, ts.obs), ts.obs

    env_state, ts = env.reset_to_task(key, jnp.asarray(task))
    _, path = jax.lax.scan(step, (env_state, ts.obs), jax.random.split(key, agent.config.eval_horizon))
    return np.concatenate([np.asarray(ts.obs)[None], np.asarray(path)])


def plot_phi(agent: HILP, state, path: pathlib.Path) -> None:
    """Left: the maze, every free cell coloured by its shortest-path distance from task 0's start,
    and a goal-prompted episode. Right: the same states and episode in φ space (the first two
    principal components of φ when d > 2), where HILP makes temporal distance Euclidean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = agent.env
    cells = env.layout.free_cells
    grid = (cells[:, None, :] + np.stack(np.meshgrid(np.linspace(-0.4, 0.4, 5), np.linspace(-0.4, 0.4, 5)), -1).reshape(1, -1, 2)).reshape(-1, 2)
    positions = grid[:, ::-1].astype(np.float32)  # (row, column) -> (x, y)
    start, goal = env.layout.tasks[0]
    distance = shortest_path_lengths(env.layout.walls)[start][np.floor(grid[:, 0] + 0.5).astype(int), np.floor(grid[:, 1] + 0.5).astype(int)]
    trajectory = goal_trajectory(agent, state, 0, jax.random.key(0))
    phi = np.asarray(agent.represent(state.params, jnp.asarray(np.concatenate([positions, trajectory]))))
    centred = phi - phi[: len(positions)].mean(0)
    axes_2d = np.linalg.svd(centred[: len(positions)], full_matrices=False)[2][:2].T if phi.shape[1] > 2 else np.eye(2)
    projected = centred @ axes_2d
    fig, (maze, latent) = plt.subplots(1, 2, figsize=(10, 4.4), dpi=120)
    for ax, points, name in ((maze, np.concatenate([positions, trajectory]), "maze (x, y)"), (latent, projected, "φ (first 2 principal axes)")):
        shown = ax.scatter(points[: len(positions), 0], points[: len(positions), 1], c=distance, cmap="viridis", s=6)
        ax.plot(points[len(positions) :, 0], points[len(positions) :, 1], color="red", lw=1.2, label="goal-prompted episode, task 0")
        ax.set_title(name)
    maze.invert_yaxis()
    maze.legend(loc="lower right", fontsize=7)
    fig.colorbar(shown, ax=latent, label="shortest path from task 0's start (8-connected cell moves)")
    fig.suptitle(f"{env.layout.name} maze: HILP's φ (d = {agent.latent_size}), seed 0", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
