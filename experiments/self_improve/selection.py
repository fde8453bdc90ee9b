"""Why best-of-K by self-certainty loses to one sample here: statistics of the selected responses.

    python -m experiments.self_improve.selection --run-dir runs/self_improve --method sft

Restores the last checkpoint of `<run-dir>/<method>` (the default experiment's config, or the
run's `config.json` agent settings), samples K responses to each held-out prompt per member, and
prints per member: exact match of all samples and of the one with the highest self-certainty,
their mean lengths, and the mean self-certainty of correct and of wrong responses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_si import checkpoint, sequence
from jaxrl_si.agents.self_improve import (
    SelfImprove,
    SelfImproveConfig,
    SelfImproveHyperparams,
)


def selection_statistics(agent: SelfImprove, state, key) -> dict[str, jax.Array]:
    """One member: K samples per held-out prompt, and what picking by self-certainty selects."""
    k = agent.config.samples_per_prompt
    problems = agent.eval_problems()
    many = agent._sample(state.params, problems, key, temperature=agent.config.temperature, copies=k)
    certainty = agent._self_certainty(state.params, problems, many).reshape(-1, k)
    length = many.mask.sum(-1).reshape(-1, k).astype(jnp.float32)
    correct = sequence.exact_match(many.tokens, many.mask, jnp.repeat(problems.answers, k, 0)).reshape(-1, k)
    picked = jnp.argmax(certainty, -1)[:, None]
    take = lambda x: jnp.take_along_axis(x, picked, 1)[:, 0]  # noqa: E731
    return {
        "exact_match/all": correct.mean(),
        "exact_match/picked": take(correct).mean(),
        "length/all": length.mean(),
        "length/picked": take(length).mean(),
        "self_certainty/correct": jnp.sum(certainty * correct) / jnp.maximum(correct.sum(), 1),
        "self_certainty/wrong": jnp.sum(certainty * (1 - correct)) / jnp.maximum((1 - correct).sum(), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=pathlib.Path, default=pathlib.Path("runs/self_improve"))
    parser.add_argument("--method", default="sft", help="agent method of the run's directory <run-dir>/<method>")
    args = parser.parse_args(argv)
    run = json.loads((args.run_dir / "config.json").read_text())
    fields = {f.name for f in dataclasses.fields(SelfImproveConfig)}
    config = SelfImproveConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in run["agent"].items() if k in fields} | {"method": "sft"})
    agent = SelfImprove.build(config)
    members = run["seeds"]
    hparams = jax.tree.map(lambda x: jnp.full((members,), x, jnp.float32), SelfImproveHyperparams())
    target = jax.eval_shape(jax.vmap(agent.init), hparams, jax.random.split(jax.random.key(0), members))
    with checkpoint.Checkpointer(args.run_dir / args.method / "checkpoints") as saver:
        state = saver.restore(saver.latest_step(), target).state
    keys = jax.random.split(jax.random.key(1), members)
    stats = jax.jit(jax.vmap(lambda s, key: selection_statistics(agent, s, key)))(state, keys)
    table = {name: np.round(np.asarray(value, np.float64), 3).tolist() for name, value in stats.items()}
    for name, values in table.items():
        print(f"{name:24s} {values}")
    return table


if __name__ == "__main__":
    main()
