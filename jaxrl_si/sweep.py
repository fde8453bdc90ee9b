"""Hyperparameter sweeps as one compiled program: settings x seeds, vmapped, sharded, chunked.

    spec = sweep.parse_spec("learning_rate=1e-4,3e-4,1e-3 clip_eps=0.1,0.2")     # a 3 x 2 grid
    spec = sweep.parse_spec("random:16:0 learning_rate=loguniform(1e-5,1e-2)")  # 16 draws, seed 0
    result = sweep.run(trainer, spec, base_hparams=PPOHyperparams(), seeds=4, run_dir="runs/s")

A sweep of S settings and N seeds is M = S * N members on one flat member axis (setting-major:
member m is setting m // N, seed m % N), run by the iteration loop (`jaxrl_si.loop`) as
`jit(vmap(iterate))` over members with the member axis sharded over the mesh's `sweep` axis.
This is `jit(vmap(vmap(train)))` over (settings, seeds) with the two member axes flattened into
one, which lets any S x N divide the mesh and be chunked. Seed n uses the same key in every
setting (common random numbers), so members differ only by their hyperparameters.

What a member's result depends on, exactly (measured on XLA:CPU, tests/test_sweep.py):
- Members are independent of one another, bit for bit: with the same member layout (count,
  mesh, chunking), changing the other members' hyperparameters leaves a member's metrics and
  parameters identical.
- A member agrees with the same (hyperparameters, key) run alone, or in another layout, to
  float32 rounding at first (about 1e-7 relative over the first iteration): another layout
  (another member count or mesh) makes XLA pick other kernels for the batched matmuls, which
  sum in another order. Training amplifies such differences until a sampled action flips
  (on CartPole at lr 1e-3, after about 30 updates); from there the two runs follow different
  trajectories (final returns e.g. 202.0 and 203.3), equally valid draws of the same
  experiment. So a table is reproduced exactly by rerunning the same sweep, and statistically
  by running a member alone.

Members too many for memory run in chunks of `members_per_chunk`, each chunk still one vmapped
program (the same compiled program: a short last chunk is padded with copies of its last
member, whose results are dropped), each with its own run directory and checkpoints.

Outputs in `run_dir`: `table.csv` and `table.json` (one row per member: setting, seed,
hyperparameters, final and best return; the JSON adds the per-iteration curve), `curves.png`
(mean and min-max over seeds per setting), `heatmap.png` for 2-D grids and `final_return.png`
for 1-D grids.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import operator
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from jaxrl_si import loop
from jaxrl_si.distributed import is_main_process
from jaxrl_si.errors import ConfigError
from jaxrl_si.metrics import final_episode_return, smoothed_episode_return
from jaxrl_si.paths import run_path
from jaxrl_si.plots import plot_heatmap, plot_learning_curves, plot_metric_vs_value

DISTRIBUTIONS = ("uniform", "loguniform", "choice")


@dataclasses.dataclass(frozen=True)
class Distribution:
    """`uniform(low, high)`, `loguniform(low, high)` or `choice(v1, v2, ...)`."""

    kind: str
    args: tuple[float, ...]

    def __post_init__(self):
        if self.kind not in DISTRIBUTIONS:
            raise ConfigError(f"unknown distribution {self.kind!r}; use one of {DISTRIBUTIONS}")
        if self.kind != "choice" and (len(self.args) != 2 or not self.args[0] < self.args[1]):
            raise ConfigError(f"{self.kind} needs (low, high) with low < high, got {self.args}")
        if self.kind == "loguniform" and self.args[0] <= 0:
            raise ConfigError(f"loguniform needs low > 0, got {self.args}")
        if self.kind == "choice" and not self.args:
            raise ConfigError("choice needs at least one value")

    def sample(self, rng: np.random.Generator) -> float:
        low, high = (self.args + (0.0,))[:2]
        if self.kind == "uniform":
            return float(rng.uniform(low, high))
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(low), np.log(high))))
        return float(self.args[rng.integers(len(self.args))])


@dataclasses.dataclass(frozen=True)
class Grid:
    """Every combination of the listed values; `Grid({})` is a single setting (no sweep)."""

    values: Mapping[str, tuple[float, ...]]


@dataclasses.dataclass(frozen=True)
class RandomSearch:
    """`num_settings` independent draws of every distribution, from numpy's `Generator(seed)`."""

    distributions: Mapping[str, Distribution]
    num_settings: int
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Listed:
    """Settings given one by one (e.g. methods crossed with the oracles that apply to them).

    Every setting names the same hyperparameters (an unnamed one would silently fall back to
    the base value in some settings only).
    """

    settings: tuple[Mapping[str, float], ...]

    def __post_init__(self):
        if not self.settings:
            raise ConfigError("a Listed sweep needs at least one setting")
        names = {tuple(sorted(s)) for s in self.settings}
        if len(names) != 1:
            raise ConfigError(f"every Listed setting must name the same hyperparameters, got {sorted(names)}")


def cross(first: Spec, second: Spec) -> Listed:
    """Every setting of `first` combined with every setting of `second` (first-major)."""
    overlap = set(swept_names(first)) & set(swept_names(second))
    if overlap:
        raise ConfigError(f"both sweeps set {sorted(overlap)}")
    return Listed(tuple({**a, **b} for a in settings(first) for b in settings(second)))


Spec = Grid | RandomSearch | Listed


def settings(spec: Spec) -> list[dict[str, float]]:
    """The settings of a spec, in order (grids: last name varies fastest)."""
    if isinstance(spec, Listed):
        return [dict(s) for s in spec.settings]
    if isinstance(spec, Grid):
        names = list(spec.values)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(spec.values[n] for n in names))]
    rng = np.random.default_rng(spec.seed)
    return [{name: dist.sample(rng) for name, dist in spec.distributions.items()} for _ in range(spec.num_settings)]


def swept_names(spec: Spec) -> list[str]:
    if isinstance(spec, Listed):
        return list(spec.settings[0])
    return list(spec.values if isinstance(spec, Grid) else spec.distributions)


def parse_spec(text: str) -> Spec:
    """Parse a sweep from the command line, or from a JSON file when `text` names one.

    Grid: `"name=v1,v2,... name2=..."`. Random: `"random:<num_settings>[:<seed>] name=dist(a,b) ..."`
    with dist one of uniform, loguniform, choice. JSON: `{"grid": {name: [values]}}`,
    `{"random": {"num_settings": n, "seed": s, "params": {name: [dist, a, b, ...]}}}` or
    `{"list": [{name: value, ...}, ...]}` (settings one by one).
    An empty string is a single setting.
    """
    if text.strip().endswith(".json"):
        return _spec_from_json(_read_json(pathlib.Path(text.strip())))
    tokens = text.replace(";", " ").split()
    if tokens and tokens[0].startswith("random:"):
        parts = tokens[0].split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"random sweeps start with 'random:<num_settings>[:<seed>]', got {tokens[0]!r}")
        dists = {name: _parse_distribution(name, value) for name, value in map(_split_assignment, tokens[1:])}
        count, seed = _integer("random:<num_settings>", parts[1]), _integer("random:...:<seed>", parts[2]) if len(parts) == 3 else 0
        if count < 1:
            raise ConfigError(f"a random sweep needs at least one setting, got {tokens[0]!r}")
        return RandomSearch(dists, count, seed)
    return Grid({name: _numbers(name, value.split(",")) for name, value in map(_split_assignment, tokens)})


def _numbers(name: str, texts) -> tuple[float, ...]:
    """The values of `name` as floats, or `ConfigError` naming the one that is not a number."""
    values = []
    for text in texts:
        try:
            values.append(float(text))
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {text!r} is not a number") from None
    return tuple(values)


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an integer") from None


def _split_assignment(token: str) -> tuple[str, str]:
    name, sep, value = token.partition("=")
    if not sep or not name or not value:
        raise ConfigError(f"expected name=values in the sweep spec, got {token!r}")
    return name, value


def _parse_distribution(name: str, text: str) -> Distribution:
    match = re.fullmatch(r"(\w+)\(([^)]*)\)", text)
    if not match:
        raise ConfigError(f"{name}: expected dist(a,b) with dist in {DISTRIBUTIONS}, got {text!r}")
    return Distribution(match[1], _numbers(name, [v for v in match[2].split(",") if v]))


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the sweep file {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"the sweep file {path} is not valid JSON: {error}") from None


def _spec_from_json(data: Any) -> Spec:
    try:
        return _spec_from_dict(data)
    except (AttributeError, IndexError, KeyError, TypeError) as error:
        raise ConfigError(f"malformed sweep JSON ({type(error).__name__}: {error}); see sweep.parse_spec for the layout") from None


def _spec_from_dict(data: Mapping[str, Any]) -> Spec:
    if set(data) == {"grid"}:
        return Grid({k: _numbers(k, vs) for k, vs in data["grid"].items()})
    if set(data) == {"list"}:
        return Listed(tuple({k: _numbers(k, [v])[0] for k, v in s.items()} for s in data["list"]))
    if set(data) == {"random"}:
        r = data["random"]
        dists = {k: Distribution(v[0], _numbers(k, v[1:])) for k, v in r["params"].items()}
        return RandomSearch(dists, int(r["num_settings"]), int(r.get("seed", 0)))
    raise ConfigError(f'a sweep JSON holds {{"grid": ...}}, {{"random": ...}} or {{"list": [...]}}, got keys {sorted(data)}')


def member_hparams(base: Any, setting_list: Sequence[Mapping[str, float]], seeds: int) -> Any:
    """Hyperparameters of all members, every leaf float32 `[S * seeds]` (setting-major).

    `base` is a dataclass pytree (e.g. `PPOHyperparams`) giving the unswept values; a swept
    name that is not one of its fields is an error naming the valid ones.
    """
    fields = [f.name for f in dataclasses.fields(base)]
    for name in {n for s in setting_list for n in s}:
        if name not in fields:
            raise ConfigError(f"unknown hyperparameter {name!r} in the sweep; valid names: {fields}")
    columns = {
        name: np.repeat(np.asarray([s.get(name, getattr(base, name)) for s in setting_list], np.float32), seeds)
        for name in fields
    }
    return base.replace(**columns)


def member_keys(seed: int, num_settings: int, seeds: int) -> jax.Array:
    """`[S * seeds]` keys: seed n gets `split(key(seed), seeds)[n]` in every setting."""
    return jax.numpy.tile(jax.random.split(jax.random.key(seed), seeds), num_settings)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    settings: list[dict[str, float]]
    table: list[dict[str, Any]]  # one row per member
    history: dict[str, np.ndarray]  # metric -> `[M, updates]`
    seconds: float  # wall time, compilation included


def run(
    trainer: loop.Trainer,
    spec: Spec,
    *,
    base_hparams: Any,
    run_dir: str | os.PathLike,
    seeds: int = 1,
    seed: int = 0,
    members_per_chunk: int | None = None,
    final_window: int = 20,
    resume: bool = False,
    max_to_keep: int | None = 3,
    run_config: Mapping[str, Any] | None = None,
    on_start: Callable[[], None] | None = None,
) -> SweepResult:
    """Run every (setting, seed) member and write the table and plots (see module docstring).

    Args:
      final_window: updates averaged (episode-weighted) for `final_return`.
      members_per_chunk: members per compiled program (default: all); with a mesh, a multiple
        of its `sweep` axis.
      on_start: passed to the first chunk's `loop.run` (called before anything is written).

    Invalid settings (an unknown hyperparameter, members that do not divide the mesh) raise
    `ConfigError` before anything runs.
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be positive, got {seeds}")
    run_dir = run_path(run_dir)
    setting_list = settings(spec)
    hparams = member_hparams(base_hparams, setting_list, seeds)
    keys = member_keys(seed, len(setting_list), seeds)
    members = len(keys)
    labels = [{"member": m, "setting": m // seeds, "seed": m % seeds} for m in range(members)]
    chunk = members_per_chunk or members
    if chunk < 1:
        raise ConfigError(f"members_per_chunk must be positive, got {chunk}")
    trainer.check_members(chunk)
    config = {**(run_config or {}), "sweep": _describe(spec), "seeds": seeds, "seed": seed}
    histories, seconds = [], 0.0
    for index, first in enumerate(range(0, members, chunk)):
        taken = list(range(first, min(first + chunk, members)))
        padded = np.asarray(taken + [taken[-1]] * (chunk - len(taken)))
        result = loop.run(
            trainer,
            jax.tree.map(operator.itemgetter(padded), hparams),
            keys[padded],
            run_dir=run_dir if chunk == members else run_dir / f"chunk_{index:03d}",
            run_config={**config, "chunk": index},
            member_labels=[labels[m] for m in taken] + [None] * (chunk - len(taken)),
            resume=resume,
            max_to_keep=max_to_keep,
            desc="sweep" if chunk == members else f"sweep chunk {index + 1}/{math.ceil(members / chunk)}",
            on_start=on_start if index == 0 else None,
        )
        histories.append({k: v[: len(taken)] for k, v in result.history.items()})
        seconds += result.seconds
    history = {k: np.concatenate([h[k] for h in histories]) for k in histories[0]}
    table = member_table(trainer, spec, setting_list, history, seeds, final_window)
    if is_main_process():
        write_outputs(trainer, spec, setting_list, table, history, seeds, run_dir, final_window)
    return SweepResult(setting_list, table, history, seconds)


def _describe(spec: Spec) -> dict:
    if isinstance(spec, Listed):
        return {"list": [dict(s) for s in spec.settings]}
    if isinstance(spec, Grid):
        return {"grid": {k: list(v) for k, v in spec.values.items()}}
    params = {k: [d.kind, *d.args] for k, d in spec.distributions.items()}
    return {"random": {"num_settings": spec.num_settings, "seed": spec.seed, "params": params}}


def member_table(trainer, spec, setting_list, history, seeds: int, final_window: int) -> list[dict[str, Any]]:
    """One row per member: setting, seed, swept values, final and best return, curve.

    `final_return` averages the episodes that ended in the last `final_window` updates;
    `best_return` is the highest such `final_window`-update average along training (so never
    below the final one); `curve` holds the per-iteration averages.
    """
    returns, counts = loop.returns_and_counts(trainer, history)
    final = final_episode_return(returns, counts, final_window)
    best = smoothed_episode_return(returns, counts, final_window)
    curves = loop.iteration_returns(trainer, history)
    rows = []
    for member, (value, smoothed, curve) in enumerate(zip(final, best, curves, strict=True)):
        setting = setting_list[member // seeds]
        rows.append(
            {
                "member": member,
                "setting": member // seeds,
                "seed": member % seeds,
                **{name: setting[name] for name in swept_names(spec)},
                "final_return": _round(value),
                "best_return": _round(np.nanmax(smoothed)) if np.isfinite(smoothed).any() else None,
                "curve": [_round(x) for x in curve],
            }
        )
    return rows


def _round(x) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def write_outputs(trainer, spec, setting_list, table, history, seeds: int, run_dir: epath.Path, smoothing: int = 20) -> None:
    """`table.csv`, `table.json`, `curves.png`, and `heatmap.png` / `final_return.png` for grids.

    Curves are episode-weighted moving averages over `smoothing` updates (per-update returns
    of a few episodes are too noisy to compare settings by eye).
    """
    env_steps = [(i + 1) * trainer.updates_per_iteration * trainer.env_steps_per_update for i in range(trainer.num_iterations)]
    (run_dir / "table.json").write_text(json.dumps({"sweep": _describe(spec), "env_steps": env_steps, "members": table}, indent=1))
    columns = [k for k in table[0] if k != "curve"]
    with (run_dir / "table.csv").open("w") as f:  # csv's own \r\n line ends (POSIX text files do not translate them)
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    returns, counts = loop.returns_and_counts(trainer, history)
    smooth = smoothed_episode_return(returns, counts, smoothing)
    x = np.arange(1, returns.shape[1] + 1) * trainer.env_steps_per_update
    curves = {_label(s): (x, smooth[i * seeds : (i + 1) * seeds]) for i, s in enumerate(setting_list)}
    title = f"{type(trainer.config).__name__.removesuffix('Config')} on {getattr(trainer.config, 'env', '')}, {seeds} seed(s) per setting"
    plot_learning_curves(curves, run_dir / "curves.png", title=title, ylabel=f"episode return (last {smoothing} updates)")
    final = np.array([np.nan if r["final_return"] is None else r["final_return"] for r in table]).reshape(-1, seeds)
    names = swept_names(spec)
    if isinstance(spec, Grid) and len(names) == 2:
        shape = tuple(len(spec.values[n]) for n in names)
        plot_heatmap(np.nanmean(final, axis=1).reshape(shape), spec.values[names[0]], spec.values[names[1]], names, run_dir / "heatmap.png")
    if isinstance(spec, Grid) and len(names) == 1:
        plot_metric_vs_value(spec.values[names[0]], final, names[0], run_dir / "final_return.png")


def _label(setting: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in setting.items()) or "default"
