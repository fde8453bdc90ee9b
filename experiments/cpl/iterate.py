"""Iterated self-improvement with CPL: learn offline, act, get the new behaviour labelled, learn again.

    python -m experiments.cpl.iterate                       # 5 seeds, the initial training then 5 rounds
    python -m experiments.cpl.iterate --rounds 3 --episodes-per-round 50
    python -m experiments.cpl.iterate --resume              # continue a killed run where it stopped

Round 0 trains CPL on the base dataset (generated as `python -m experiments.cpl` does, or
`--dataset`, which must hold the oracle saved with it). Each round k ≥ 1 then, for every member
(seed) on its own:

1. rolls out the member's current deterministic CPL policy with σ = `action_noise` Gaussian
   noise for `episodes_per_round` episodes (on device, all members in one program), storing
   the oracle's advantages A*(s, a) from the dataset's oracle critic;
2. cuts the new episodes into segments and pairs each new segment with a uniformly drawn other
   segment of the grown dataset, labelled by the dataset's oracle (the regret oracle: hard
   labels on Σ A*);
3. writes the grown dataset as version `1.<k>.0` of `run_dir/datasets/member_<m>` (TFDS
   `array_record`, all-or-nothing), the round's dataset snapshot;
4. trains CPL on it for `round_updates` updates (each `cpl.steps_per_update` gradient steps and
   one on-device evaluation), continuing the member's parameters and optimiser, as one vmapped
   program over the members, each reading its own dataset (`Trainer(data_per_member=True)`),
   checkpointed by `jaxrl_si.loop` in `run_dir/round_<k>/`.

A run killed anywhere resumes where it was: finished rounds are restored from their last
checkpoint, a round whose dataset snapshot was written is trained on that snapshot as it was
(never collected again), and a round interrupted during training resumes from its latest
checkpoint. Writes `results.json` and `rounds.png` (final evaluation return of each round, mean
and 95 % interval over seeds, and the dataset size).

Choices the paper leaves open (it proposes no iterated variant): the new pairs compare new
behaviour with old as well as with new (a partner drawn from the whole grown dataset); rounds
continue the optimiser without a new warm-up; the BC warm-up runs in round 0 only; the
observation statistics stay those of the base dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np
from etils import epath

from experiments import cli
from experiments.cpl.experiment import CPU_CPL, load_or_generate
from experiments.report import mean_interval
from jaxrl_si import loop, plots, preferences, sweep
from jaxrl_si.agents.cpl import CPL, CPLConfig, CPLHyperparams
from jaxrl_si.data import (
    OfflineData,
    Pairs,
    Segments,
    acting_env,
    label_pairs,
    rollout_episodes,
    segment_starts,
)
from jaxrl_si.data.generate import GenerationConfig, critic_value, load_oracle
from jaxrl_si.errors import ConfigError
from jaxrl_si.parallel import (
    batch_constraint,
    default_mesh,
    expose_cpu_cores,
    make_mesh,
)

ROUND_STREAM = 7  # fold_in tag of the rounds' keys, apart from the members' training keys
COLLECT, GROW = 0, 1  # a round's two purposes: the rollouts, and the new pairs' partners and labels


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: GenerationConfig = GenerationConfig()  # the base dataset, when --dataset is not given
    dataset: pathlib.Path | None = None  # a base dataset directory with its oracle (data.generate)
    cpl: CPLConfig = dataclasses.replace(CPU_CPL, pair_mode="sparse")  # round 0's run; sparse: the labelled pairs grow
    hparams: CPLHyperparams = CPLHyperparams()
    rounds: int = 5  # self-improvement rounds after round 0
    round_updates: int = 5  # CPL updates per round (each cpl.steps_per_update gradient steps and an evaluation)
    episodes_per_round: int = 25  # new episodes of each member's policy per round (0: the no-new-data control)
    action_noise: float = 0.3  # σ of the collection's Gaussian action noise, in [−1, 1] units
    seeds: int = 5
    seed: int = 0
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core
    resume: bool = False
    run_dir: cli.RunDir = epath.Path("runs/cpl_iterate")


def main(run: RunConfig) -> dict:
    _check(run)
    base, metadata = load_or_generate(run)
    oracle_agent, oracle = load_oracle(run.dataset or run.run_dir / "dataset", metadata)
    mesh = default_mesh(run.seeds) if run.mesh is None else make_mesh(*run.mesh)
    hparams = sweep.member_hparams(run.hparams, [{}], run.seeds)
    keys = sweep.member_keys(run.seed, 1, run.seeds)
    value = functools.partial(critic_value, oracle_agent, oracle)
    state, trainer, datasets, returns, sizes = None, None, [base] * run.seeds, [], []
    for k in range(run.rounds + 1):
        if k:
            datasets = _round_datasets(run, metadata, datasets, trainer.agent, state, keys, value, k)
        trainer = _trainer(run, metadata.env_name, datasets, mesh, k)
        result = loop.run(
            trainer, hparams, keys, run_dir=run.run_dir / f"round_{k:02d}", resume=run.resume, max_to_keep=1,
            desc=f"round {k}/{run.rounds}", initial_state=state, run_config={"round": k, "dataset": metadata.to_json(), "collection": _collection(run)},
            on_start=functools.partial(cli.write_run_config, run) if k == 0 else None,
        )  # fmt: skip
        state = result.state
        returns.append(result.history["episode/return"][:, -1])  # the round's last evaluation
        sizes.append(datasets[0].episodes.num_episodes)
    return _write(run, metadata, returns, sizes)


def _collection(run: RunConfig) -> dict:
    """What makes a round's data: a resume must collect the remaining rounds the same way."""
    return {"round_updates": run.round_updates, "episodes_per_round": run.episodes_per_round, "action_noise": run.action_noise}


def round_key(member_key, k: int):
    """Member's key of round k: fold_in(fold_in(key, ROUND_STREAM), k), split by purpose after."""
    return jax.random.fold_in(jax.random.fold_in(member_key, ROUND_STREAM), k)


def _check(run: RunConfig) -> None:
    for name in ("rounds", "round_updates", "episodes_per_round", "seeds"):
        least = 0 if name == "episodes_per_round" else 1  # 0: the no-new-data control
        if getattr(run, name) < least:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(run, name)}")
    if not run.action_noise >= 0:
        raise ConfigError(f"--action-noise must be >= 0, got {run.action_noise}")


def _trainer(run: RunConfig, env: str, datasets: list[OfflineData], mesh, k: int) -> loop.Trainer:
    """Round k's trainer: round 0 the whole `cpl` run, later rounds `round_updates` updates without
    warm-ups; every member on its own dataset (stacked along the member axis)."""
    config = dataclasses.replace(run.cpl, env=env)
    if k:
        config = dataclasses.replace(config, total_steps=run.round_updates * config.steps_per_update, bc_steps=0, lr_warmup_steps=0)
    agent = CPL.build(config, data=jax.device_put(datasets[0]), constrain=batch_constraint(mesh))  # checks the data against the env
    stacked = jax.tree.map(lambda *x: np.stack(x), *datasets)
    updates = config.num_updates if k else loop.updates_per_iteration(config.num_updates, 5)
    return loop.Trainer(dataclasses.replace(agent, data=stacked), updates, mesh, data_per_member=True)


def _round_datasets(run: RunConfig, metadata, previous: list[OfflineData], agent: CPL, state, keys, value, k: int) -> list[OfflineData]:
    """Every member's dataset of round k: its snapshot if written, else collected, grown and written.
    With `episodes_per_round` 0 (the control: the same extra steps without new data) the previous ones."""
    from jaxrl_si.data import tfds_io

    if not run.episodes_per_round:
        return previous

    directories = [run.run_dir / "datasets" / f"member_{m}" for m in range(run.seeds)]
    version = f"1.{k}.0"
    if all(version in tfds_io.versions(d) for d in directories):
        return [tfds_io.read_dataset(d, version=version)[0] for d in directories]
    episodes = _collect(run, metadata, agent, state, keys, value, k)
    grown = []
    for m, directory in enumerate(directories):
        new = jax.tree.map(lambda x, m=m: np.asarray(x[m]), episodes)
        data = grow(previous[m], new, metadata, jax.random.fold_in(round_key(keys[m], k), GROW))
        if version not in tfds_io.versions(directory):
            tfds_io.write_dataset(directory, data, round_metadata(run, metadata, k), version=version)
        grown.append(tfds_io.read_dataset(directory, version=version)[0])
    return grown


def round_metadata(run: RunConfig, metadata, k: int):
    """The base dataset's metadata with one policy entry per round so far (`Episodes.policy` of
    round j's episodes is `len(base policies) + j - 1`)."""
    rounds = [{"round": j, "policy": "CPL (member's own)", "episodes": run.episodes_per_round, "action_noise": run.action_noise} for j in range(1, k + 1)]
    return dataclasses.replace(metadata, policies=(*metadata.policies, *rounds), notes=f"self-improvement round {k}")


def _collect(run: RunConfig, metadata, agent: CPL, state, keys, value, k: int):
    """`episodes_per_round` noisy episodes of every member's current policy, `[M, N, T, ...]`, on
    device (`agent.act` reads only the member's state, not the agent's data)."""
    task = preferences.task(metadata.env_name)
    env = acting_env(task.make_env())

    def member(member_state, key):
        return rollout_episodes(
            env, functools.partial(agent.act, member_state), key, num_episodes=run.episodes_per_round,
            max_length=task.episode_length, action_noise=run.action_noise, value=value,
            advantage_discount=metadata.discount, policy_index=len(metadata.policies) + k - 1,
        )  # fmt: skip

    round_keys = jax.vmap(lambda key: jax.random.fold_in(round_key(key, k), COLLECT))(keys)
    return jax.jit(jax.vmap(member))(state, round_keys)


def grow(data: OfflineData, new, metadata, key) -> OfflineData:
    """`data` with the new episodes appended, their segments, and one labelled pair per new segment.

    A new segment's partner is drawn uniformly from every other segment of the grown dataset; the
    label is the dataset's oracle's (`metadata.oracle`: the regret oracle, hard labels on Σ A*, or
    a task preset, sampled).
    """
    length, stride = metadata.segment_length, int(metadata.extra.get("segment_stride", metadata.segment_length))
    episodes = jax.tree.map(lambda a, b: np.concatenate([a, b]), data.episodes, new)
    episode, start = segment_starts(np.asarray(new.length), length, stride)
    segments = Segments(
        np.concatenate([data.segments.episode, episode + data.episodes.num_episodes]).astype(np.int32),
        np.concatenate([data.segments.start, start]).astype(np.int32),
        length,
    )
    key_partner, key_label = jax.random.split(key)
    first = np.arange(data.segments.num_segments, segments.num_segments, dtype=np.int32)
    offset = np.asarray(jax.random.randint(key_partner, first.shape, 1, segments.num_segments))
    second = ((first + offset) % segments.num_segments).astype(np.int32)
    regret = metadata.oracle == "regret"
    oracle = preferences.HardLabels() if regret else preferences.task(metadata.env_name).oracle(metadata.oracle)
    labels = label_pairs(jax.device_put(episodes), jax.device_put(segments), first, second, oracle, None if regret else key_label, regret=regret)
    pairs = Pairs(
        np.concatenate([data.pairs.first, first]),
        np.concatenate([data.pairs.second, second]),
        np.concatenate([data.pairs.label, np.asarray(labels, np.float32)]),
    )
    return OfflineData(episodes, segments, pairs)


def _write(run: RunConfig, metadata, returns: list[np.ndarray], sizes: list[int]) -> dict:
    rounds = [{"round": k, "return": mean_interval(r), "episodes_per_member": n} for k, (r, n) in enumerate(zip(returns, sizes, strict=True))]
    summary = {"env": metadata.env_name, "seeds": run.seeds, "rounds": rounds}
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=1))
    plots.plot_interval_panels(
        np.arange(len(returns)), {"CPL": {"CPL, iterated": np.stack(returns, 1)}}, run.run_dir / "rounds.png",
        xlabel="self-improvement round", ylabel="return of the deterministic policy",
        title=f"{metadata.env_name}: iterated CPL, mean and 95% interval over {run.seeds} seeds",
    )  # fmt: skip
    for row in rounds:
        print(f"round {row['round']}: return {row['return']['mean']:.1f} ({row['episodes_per_member']} episodes per member)")
    return summary



if __name__ == "__main__":
    cli.main(RunConfig, main, before_run=lambda run: expose_cpu_cores(run.cpu_devices))
