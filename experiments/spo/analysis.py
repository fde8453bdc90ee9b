"""After the SPO comparison's training: on-device evaluation, the table with intervals, the plots.

`evaluate` runs two jitted, member-vmapped programs: the final policies' fresh episodes
(return, and whether the non-Markovian oracle's constraint held), and every iteration's policy
against every other's under the member's oracle (`PreferencePPO.cross_play`). `write` turns
them and the training curves into `results.json`, `results.md`, `returns.png` and
`win_rates_<oracle>.png`. Intervals are 95 % Student-t intervals of the mean over seeds.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from experiments.report import format_interval, mean_interval
from jaxrl_si import loop, plots
from jaxrl_si.metrics import smoothed_episode_return

MATRIX_KINDS = ("intransitive", "non-markovian")  # oracles whose preferences the return does not capture


def evaluate(trainer: loop.Trainer, hparams, states, result, run) -> dict[str, np.ndarray]:
    """Fresh episodes of the final policies, and the iterate-vs-iterate win rates `[M, K, K]`."""
    agent = trainer.agent
    members = len(result.table)
    final = jax.tree.map(lambda x: x[-1], states)
    keys = jax.random.split(jax.random.key(run.seed + 1), members)
    episodes = jax.jit(jax.vmap(agent.episodes))(final, keys)
    out = {"final_returns": np.asarray(episodes.returns.mean(-1))}
    if "constrained" in agent.config.oracles:
        satisfied = agent.config.task.oracle("constrained").satisfied(episodes)
        out["constraint_satisfied"] = np.asarray(satisfied.mean(-1))
    if run.matrices:
        cross_play = jax.jit(jax.vmap(agent.cross_play, in_axes=(0, 1, 0)))
        out["win_rates"] = np.asarray(cross_play(hparams, states, jax.random.split(jax.random.key(run.seed + 2), members)))
    return out


def names(config, setting: dict[str, float]) -> tuple[str, str, str]:
    """(method, oracle, other settings) of a sweep setting, by name."""
    method = config.methods[int(round(setting["method"]))]
    oracle = "true reward" if method == "ppo" else config.oracles[int(round(setting["oracle"]))]
    rest = ", ".join(f"{k}={v:g}" for k, v in setting.items() if k not in ("method", "oracle"))
    return method, oracle, rest


def table(trainer, result, evaluation, seeds: int) -> list[dict[str, Any]]:
    """One row per setting: names, final training return, fresh-episode return, constraint rate."""
    rows = []
    for index, setting in enumerate(result.settings):
        members = slice(index * seeds, (index + 1) * seeds)
        method, oracle, rest = names(trainer.config, setting)
        row = {
            "method": method,
            "oracle": oracle,
            "setting": rest,
            "final_return": mean_interval([r["final_return"] for r in result.table[members]]),
            "eval_return": mean_interval(evaluation["final_returns"][members]),
        }
        if "constraint_satisfied" in evaluation:
            row["constraint_satisfied"] = mean_interval(evaluation["constraint_satisfied"][members])
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    constrained = "constraint_satisfied" in rows[0]
    header = "| method | oracle | setting | final return (training, last updates) | return of final policy (fresh episodes) |"
    header += " constraint kept |" if constrained else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        line = f"| {r['method']} | {r['oracle']} | {r['setting'] or '-'} | {format_interval(r['final_return'])} | {format_interval(r['eval_return'])} |"
        lines.append(line + (f" {format_interval(r['constraint_satisfied'], 2)} |" if constrained else ""))
    return "\n".join(lines) + "\n"


def write(trainer: loop.Trainer, result, evaluation, run) -> dict[str, Any]:
    rows = table(trainer, result, evaluation, run.seeds)
    summary: dict[str, Any] = {
        "env": trainer.config.env,
        "seeds": run.seeds,
        "env_steps_per_member": trainer.num_iterations * trainer.updates_per_iteration * trainer.env_steps_per_update,
        "wall_s_training_including_compile": round(result.seconds, 1),
        "table": rows,
    }
    _plot_returns(trainer, result, run)
    if "win_rates" in evaluation:
        summary["win_rates"] = _win_rate_matrices(trainer, result, evaluation["win_rates"], run)
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=1))
    (run.run_dir / "results.md").write_text(markdown(rows))
    return summary


def _plot_returns(trainer, result, run) -> None:
    """One panel per oracle: smoothed return against env steps, mean and 95 % interval over seeds."""
    returns, counts = loop.returns_and_counts(trainer, result.history)
    smooth = smoothed_episode_return(returns, counts, run.final_window)
    steps = np.arange(1, returns.shape[1] + 1) * trainer.env_steps_per_update
    panels: dict[str, dict[str, np.ndarray]] = {}
    reference = {}
    for index, setting in enumerate(result.settings):
        method, oracle, rest = names(trainer.config, setting)
        curves = smooth[index * run.seeds : (index + 1) * run.seeds]
        label = method + (f" ({rest})" if rest else "")
        if method == "ppo":
            reference[label] = curves
        else:
            panels.setdefault(oracle, {})[label] = curves
    panels = {oracle: {**curves, **reference} for oracle, curves in panels.items()} or {"true reward": reference}
    plots.plot_interval_panels(
        steps, panels, run.run_dir / "returns.png", xlabel="env steps", ylabel=f"return (last {run.final_window} updates)",
        title=f"{trainer.config.env}: ground-truth return, mean and 95% interval over {run.seeds} seeds",
    )


def _win_rate_matrices(trainer, result, win_rates: np.ndarray, run) -> dict[str, Any]:
    """Seed-mean W[i, j] per (oracle, method) for the oracles the return does not capture."""
    config = trainer.config
    out: dict[str, Any] = {}
    for oracle in config.oracles:
        if config.task.oracle(oracle).kind not in MATRIX_KINDS:
            continue
        matrices = {}
        for index, setting in enumerate(result.settings):
            method, name, rest = names(config, setting)
            if name == oracle:
                label = method + (f" ({rest})" if rest else "")
                matrices[label] = win_rates[index * run.seeds : (index + 1) * run.seeds].mean(0)
        if matrices:
            plots.plot_win_rate_matrices(matrices, run.run_dir / f"win_rates_{oracle}.png", title=f"{config.env}, oracle {oracle}: P(iterate i ≻ iterate j)")
            out[oracle] = {label: np.round(m, 3).tolist() for label, m in matrices.items()}
    return out
