"""HILP benchmark: gradient steps/s with and without φ, vmapped seeds, maze data generation, compile times.

    python experiments/bench_hilp.py              # the paper's sizes (batch 1024, MLPs 512 x 3, d = 32): for a GPU
    python experiments/bench_hilp.py --quick      # batch 256, MLPs 256 x 2, 2 seeds, short scans: minutes on a CPU

1. **Gradient steps** (`gradient_steps`): `jit` of a `lax.scan` of `--steps` `HILP.gradient_step`s
   on maze data, representation `hilbert` (φ and the policy: the full step) against `identity`
   (no φ loss: the policy's step alone; its latent is the 2-d observation instead of d). The φ
   share of a step is 1 − identity / hilbert.
2. **Seeds** (`seeds`): `--seeds` S hilbert runs as one `jit(vmap(scan))` over S init keys
   against the single-seed program called S times (its calls dispatched, then awaited).
   Seed-steps/s = S x steps / seconds; the ratio is vmapped over separate.
3. **Data** (`data`): env steps/s of collecting `--episodes` maze episodes of
   `--episode-length` steps as one jitted program: `data.rollout_episodes` (zero policy,
   Gaussian action noise σ = 1, clipped) and `data.explore.random_episodes` (uniform actions).
   The rollout's episodes are the training data of 1 and 2.
4. **Compile** (`compile_s` in each): a program's first call minus the median of its warm calls.

Every program is called once (compiled), then timed `--rounds` times, interleaved so drifts of the
machine hit all; medians. A table is printed and one JSON line per measurement, with the machine,
appended to `--out`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

QUICK = {"steps": 10, "batch": 256, "hidden": 256, "layers": 2, "seeds": 2, "episodes": 40}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"CPU sizes: {QUICK} (explicit flags still win)")
    parser.add_argument("--steps", type=int, default=100, help="gradient steps per timed call (one lax.scan)")
    parser.add_argument("--batch", type=int, default=1024, help="transitions per gradient step (paper: 1024)")
    parser.add_argument("--hidden", type=int, default=512, help="MLP width (paper: 512)")
    parser.add_argument("--layers", type=int, default=3, help="MLP hidden layers (paper: 3)")
    parser.add_argument("--latent-dim", type=int, default=32, help="d of φ (paper: 32)")
    parser.add_argument("--seeds", type=int, default=4, help="S, seeds vmapped against run one by one")
    parser.add_argument("--episodes", type=int, default=1000, help="maze episodes collected per data call")
    parser.add_argument("--episode-length", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="experiments/results/bench_hilp.jsonl")
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


def _still(obs):
    """The zero action: with σ = 1 noise, a clipped Gaussian random walk."""
    import jax.numpy as jnp

    return jnp.zeros(2)


def _scan_steps(agent, hparams, steps: int, state):
    """`steps` gradient steps in one `lax.scan`; the final state (the metrics are dropped)."""
    import jax

    return jax.lax.scan(lambda s, _: (agent.gradient_step(hparams, s)[0], None), state, None, length=steps)[0]


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parse(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
    import jax

    from experiments.report import machine
    from jaxrl_si import envs
    from jaxrl_si.agents.hilp import HILP, HILPConfig, HILPHyperparams
    from jaxrl_si.data import rollout_episodes
    from jaxrl_si.data.explore import random_episodes

    def timed(fn, arg) -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        return time.perf_counter() - start

    env = envs.make("maze:medium", episode_length=None)
    sizes = {"num_episodes": args.episodes, "max_length": args.episode_length}
    collectors = {
        "rollout_episodes": jax.jit(functools.partial(rollout_episodes, env, _still, **sizes, action_noise=1.0)),
        "explore.random_episodes": jax.jit(functools.partial(random_episodes, env, **sizes)),
    }

    key = jax.random.key(0)
    programs: dict[str, tuple] = {}  # name -> (fn, arg, units per call)
    first: dict[str, float] = {}
    for name, collect in collectors.items():
        first[name] = timed(collect, key)
        programs[name] = (collect, key, int(collect(key).length.sum()))
    data = collectors["rollout_episodes"](key)

    hparams = HILPHyperparams()
    hidden = (args.hidden,) * args.layers
    agents = {rep: HILP.build(HILPConfig(representation=rep, hidden_sizes=hidden, latent_dim=args.latent_dim, batch_size=args.batch), data=data)
              for rep in ("hilbert", "identity")}  # fmt: skip
    run = {rep: jax.jit(functools.partial(_scan_steps, agent, hparams, args.steps)) for rep, agent in agents.items()}
    keys = jax.random.split(jax.random.key(1), args.seeds)
    init = jax.jit(agents["hilbert"].init)
    states = [init(hparams, k) for k in keys]
    stacked = jax.jit(jax.vmap(agents["hilbert"].init, in_axes=(None, 0)))(hparams, keys)

    def separate(states):
        return [run["hilbert"](s) for s in states]  # the compiled single-seed program, S calls

    programs["hilbert"] = (run["hilbert"], states[0], args.steps)
    programs["identity"] = (run["identity"], jax.jit(agents["identity"].init)(hparams, keys[0]), args.steps)
    programs[f"hilbert vmap x{args.seeds}"] = (jax.jit(jax.vmap(run["hilbert"])), stacked, args.seeds * args.steps)
    programs[f"hilbert separate x{args.seeds}"] = (separate, states, args.seeds * args.steps)
    for name, (fn, arg, _) in programs.items():
        first.setdefault(name, timed(fn, arg))

    samples: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(args.rounds):
        for name, (fn, arg, _) in programs.items():
            samples[name].append(timed(fn, arg))
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    rate = {name: programs[name][2] / seconds[name] for name in programs}
    compile_s = {name: round(first[name] - seconds[name], 2) for name in programs if "separate" not in name}  # separate: compiled by `hilbert`
    vmapped, apart = f"hilbert vmap x{args.seeds}", f"hilbert separate x{args.seeds}"

    _print_table(programs, seconds, rate, compile_s)
    common = {"quick": args.quick, "rounds": args.rounds, **machine("flax", "optax")}
    net = {"batch": args.batch, "hidden": list(hidden), "latent_dim": args.latent_dim, "steps_per_call": args.steps}
    lines = [
        {"measure": "gradient_steps", **net, "steps_per_s": {r: round(rate[r], 1) for r in agents}, "ms_per_step": {r: round(1e3 / rate[r], 3) for r in agents},
         "phi_share": round(1 - rate["hilbert"] / rate["identity"], 3), "compile_s": {r: compile_s[r] for r in agents}},
        {"measure": "seeds", **net, "seeds": args.seeds, "seed_steps_per_s": {"vmapped": round(rate[vmapped], 1), "separate": round(rate[apart], 1)},
         "steps_per_s_per_seed": {"vmapped": round(rate[vmapped] / args.seeds, 1), "separate": round(rate[apart] / args.seeds, 1)},
         "vmapped_over_separate": round(rate[vmapped] / rate[apart], 3), "compile_s": {"vmapped": compile_s[vmapped], "single": compile_s["hilbert"]}},
        {"measure": "data", "env": "maze:medium", "episodes": args.episodes, "episode_length": args.episode_length,
         "env_steps_per_s": {c: round(rate[c]) for c in collectors}, "compile_s": {c: compile_s[c] for c in collectors}},
    ]  # fmt: skip
    print(f"phi share of a step: {lines[0]['phi_share']:.1%}; vmapped / separate seed-steps/s: {lines[1]['vmapped_over_separate']:.2f}x")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as out:
        out.writelines(json.dumps({**line, **common}) + "\n" for line in lines)
    print(f"appended {len(lines)} lines to {args.out}")
    return lines


def _print_table(programs: dict, seconds: dict, rate: dict, compile_s: dict) -> None:
    print(f"{'program':<26}{'units/call':>12}{'ms/call':>11}{'units/s':>12}{'compile s':>11}")
    for name, (_, _, units) in programs.items():
        print(f"{name:<26}{units:>12}{1e3 * seconds[name]:>11.1f}{rate[name]:>12.1f}{compile_s.get(name, '-'):>11}")
    print("units: env steps (data programs), gradient steps summed over seeds (the rest)")


if __name__ == "__main__":
    main()
