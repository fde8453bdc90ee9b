"""SPR benchmark: the gradient step's cost (XLA convolutions against patches, in and out of a scan),
what the Atari 100k protocol costs on this machine, the replay buffer's memory, Atari env
throughput, vmapped seeds, and where one gradient step's time goes.

    python experiments/bench_spr.py                       # every section, 3 interleaved rounds
    python experiments/bench_spr.py --only update_ms,full_protocol_hours --steps 10 --rounds 3
    python experiments/bench_spr.py --only vmap_seeds --vmap-impls patches
    python experiments/bench_spr.py --only update_ms,full_protocol_hours,replay_memory --cases atari --modes scan \\
        --atari-size 36 --batch 4 --capacity 64 --fill 40 --replay-steps 1000 --steps 2 --rounds 1   # the smoke test

Sections (`--only` takes a comma list of their names; each prints and appends one JSON line):

1. **`update_ms`**: milliseconds per SPR gradient step (`agents.spr._gradient_step`: sample,
   loss and gradient, Adam, target updates, priorities) with batch `--batch` (32), K = 5,
   n = 10, for two networks: Atari (host-driven agent, `--atari-size` (84) square frames, 4
   stacked, Nature encoder, hidden 256, 6 actions) and MinAtar (Breakout-MinAtar, 10x10x4, the
   MinAtar encoder, hidden 128, shift pad 1). Each with `conv_impl` "xla" and "patches", each
   run two ways: `jit` (the jitted step called `--steps` times from Python) and `scan` (the same
   step in a `lax.scan` of length `--steps`, as `SPR.learn` and `SPR.update` run it), per step;
   and the compile seconds of each program (`--cases`, `--impls`, `--modes` choose a subset).
   On XLA:CPU a convolution inside a loop is 15-25x slower than outside one, which is why
   `conv_impl="patches"` exists; this table shows it.
   The buffer (`--capacity` steps, 100k as in the paper) is filled with `--fill` random steps
   through `SPR.observe` in a jitted scan with the state donated; every program donates the
   state and one state is threaded through all of them (both networks have the same parameters).
2. **`full_protocol_hours`**: the hours of gradient steps the paper's protocol takes per game
   and seed (100k env steps x 2 gradient steps = 200k steps) at the Atari step times of
   `update_ms` (measured again here if `update_ms` did not run), for each variant; the headline
   is `conv_impl="auto"` inside a scan (how `SPR.learn` runs). If `atari_env_steps_per_s` is
   selected too (it runs before this section), also the hours of 100k env steps of one env at
   its measured rate (acting and storing not included).
3. **`replay_memory`**: bytes of a `SequenceReplay` state (`data.replay.replay_bytes`) for
   `--replay-steps` (100k) Atari steps of one 84x84x1 uint8 frame each (allocated: ~0.7 GB),
   against the raw frames (steps x 84 x 84), and, computed only (not allocated), the bytes of
   storing 4-frame stacks (4x the raw frames) and K-step sequences ((K + 1)x).
4. **`atari_env_steps_per_s`**: `envs.atari.AtariEnvs` on Pong with `--env-counts` (1, 8, 16)
   envs, uniformly random actions, env steps per second (all envs together) over `--env-steps`
   env steps per timing.
5. **`vmap_seeds`**: `--seeds` (5) MinAtar agents' `update` vmapped in one program against
   `--seeds` separate calls of one agent's `update` (config: 4 envs x 25 steps = 100 env steps
   per update, learning from the start, 1 gradient step per batched env step, batch `--batch`;
   one untimed update first so that every timed step learns), for each of `--vmap-impls`
   ("patches,xla"); the ratio vmapped / separate (< 1: vmapping is cheaper).
6. **`profile`**: the pieces of one MinAtar gradient step (conv_impl "auto"), each jitted on
   its own: `sample` (prioritised sample and importance weights), `forward` (the loss alone),
   `loss_and_grad`, `optimizer` (clip + Adam + the EMA and Q-target updates), `set_priorities`;
   seconds and the share of the whole jitted `_gradient_step` each takes (`forward` is part of
   `loss_and_grad`; the other four are disjoint and their sum is reported against the whole,
   which XLA fuses). The pieces that write the state (optimizer, set_priorities) donate it, as
   the step does; `--rounds` x `--steps` rounds, the pieces being short.

Every program is compiled ahead of time (compile seconds reported apart), called once, then
timed in `--rounds` rounds in which the programs of one measurement are interleaved (so drifts of
a shared machine's speed hit all of them); medians. Rows carry the machine, backend and versions.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root, when run as a script

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.report import machine
from jaxrl_si.agents import spr as spr_agent
from jaxrl_si.agents.spr import SPR, SPRConfig, SPRHyperparams
from jaxrl_si.data.replay import SequenceReplay, Step, importance_weights, replay_bytes
from jaxrl_si.nets.spr import conv_impl_for_backend

SECTIONS = ("update_ms", "full_protocol_hours", "replay_memory", "atari_env_steps_per_s", "vmap_seeds", "profile")
EXECUTION_ORDER = ("update_ms", "replay_memory", "atari_env_steps_per_s", "full_protocol_hours", "vmap_seeds", "profile")
CASES = ("atari", "minatar")
MINATAR_ENV = "gymnax:Breakout-MinAtar"
ATARI_ACTIONS = 6  # Pong's minimal action set
PROTOCOL_ENV_STEPS = 100_000
PROTOCOL_GRADIENT_STEPS = 2 * PROTOCOL_ENV_STEPS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (median)")
    parser.add_argument("--steps", type=int, default=10, help="gradient steps per timed call (and the scan's length)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of sections: {', '.join(SECTIONS)}")
    parser.add_argument("--out", default="experiments/results/bench_spr.jsonl")
    parser.add_argument("--atari-size", type=int, default=84, help="height = width of an Atari frame (paper: 84)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per gradient step (paper: 32)")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity of the timed agents (paper: 100k)")
    parser.add_argument("--fill", type=int, default=2000, help="random steps added to the buffer before timing")
    parser.add_argument("--cases", default=",".join(CASES), help="networks of update_ms: atari, minatar")
    parser.add_argument("--impls", default="xla,patches", help="conv_impl values of update_ms")
    parser.add_argument("--modes", default="jit,scan", help="update_ms: jit (called from Python) and/or scan")
    parser.add_argument("--replay-steps", type=int, default=PROTOCOL_ENV_STEPS, help="steps of the replay_memory buffer")
    parser.add_argument("--env-counts", default="1,8,16", help="Atari env counts of atari_env_steps_per_s")
    parser.add_argument("--env-steps", type=int, default=2000, help="env steps (all envs together) per Atari timing")
    parser.add_argument("--seeds", type=int, default=5, help="agents of vmap_seeds")
    parser.add_argument("--vmap-impls", default="patches,xla", help="conv_impl values of vmap_seeds")
    args = parser.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    args.cases, args.impls, args.modes, args.vmap_impls = (_names(v) for v in (args.cases, args.impls, args.modes, args.vmap_impls))
    args.env_counts = [int(n) for n in _names(args.env_counts)]
    return args


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parse(argv)
    described = machine("flax", "flashbax", "optax")
    results: dict[str, dict] = {}
    rows = []
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for section in EXECUTION_ORDER:  # full_protocol_hours uses update_ms and the env rates
        if section not in args.only:
            continue
        results[section] = SECTION_FUNCTIONS[section](args, results)
        row = {"measure": section, **results[section], "rounds": args.rounds, **described}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
    _print_table(results)
    return rows



# --- timing ------------------------------------------------------------------------------------------


def _compile(fn: Callable, *args, donate: tuple[int, ...] = ()) -> tuple[Callable, float]:
    """`jit(fn)` lowered and compiled ahead of time for `args`, and the seconds that took."""
    start = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _interleaved(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each `call()` (its result made ready), after one untimed call of each, the
    calls interleaved in each of `rounds` rounds."""
    for call in calls.values():
        jax.block_until_ready(call())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# --- agents ----------------------------------------------------------------------------------------------


def _atari_agent(args, impl: str) -> SPR:
    config = SPRConfig(
        env="", frame_stack=4, batch_size=args.batch, n_step=10, spr_steps=5, hidden=256, encoder="nature",
        conv_impl=impl, capacity=args.capacity, total_env_steps=max(args.capacity, PROTOCOL_ENV_STEPS), learning_starts=0,
    )  # fmt: skip
    return SPR.build(config, spaces=((args.atari_size, args.atari_size, 1), ATARI_ACTIONS))


def _minatar_agent(args, impl: str) -> SPR:
    config = SPRConfig(
        env=MINATAR_ENV, batch_size=args.batch, n_step=10, spr_steps=5, hidden=128, shift_pad=1, encoder="minatar",
        conv_impl=impl, capacity=args.capacity, total_env_steps=max(args.capacity, PROTOCOL_ENV_STEPS), learning_starts=0,
        eval_envs=1, eval_steps=1,
    )  # fmt: skip
    return SPR.build(config)


AGENTS = {"atari": _atari_agent, "minatar": _minatar_agent}


def _filled_state(agent: SPR, hparams: SPRHyperparams, fill: int, key):
    """`agent.init`, then `fill` random steps per env through `agent.observe` (a jitted scan, state donated)."""
    fill = max(fill, agent.config.sequence_length + 1)
    key_init, key_fill = jax.random.split(key)
    state = jax.jit(agent.init)(hparams, key_init)
    n, shape, binary = agent.config.num_envs, agent.frame_shape, agent.frame_scale == 1.0

    def add(state, key):
        k_frame, k_action, k_reward, k_done = jax.random.split(key, 4)
        if binary:  # MinAtar: 0/1 planes
            frames = jax.random.bernoulli(k_frame, 0.1, (n, *shape)).astype(jnp.uint8)
        else:
            frames = jax.random.bits(k_frame, (n, *shape), jnp.uint8)
        actions = jax.random.randint(k_action, (n,), 0, agent.network.num_actions)
        rewards = jax.random.randint(k_reward, (n,), -1, 2).astype(jnp.float32)
        dones = jax.random.uniform(k_done, (n,)) < 0.01
        return agent.observe(state, frames, actions, rewards, dones), None

    fill_fn = jax.jit(lambda state, keys: jax.lax.scan(add, state, keys)[0], donate_argnums=0)
    state = jax.block_until_ready(fill_fn(state, jax.random.split(key_fill, fill)))
    assert bool(agent.replay.can_sample(state.replay)), "the filled buffer cannot be sampled"
    return state


def _step_fn(agent: SPR, hparams: SPRHyperparams) -> Callable:
    return lambda state: spr_agent._gradient_step(agent, hparams, state)


def _scan_fn(agent: SPR, hparams: SPRHyperparams, steps: int) -> Callable:
    step = _step_fn(agent, hparams)
    return lambda state: jax.lax.scan(lambda s, _: step(s), state, None, length=steps)


# --- 1-2: the gradient step and the protocol's hours -----------------------------------------------------------


def _update_ms(args, results: dict, cases: list[str] | None = None) -> dict:
    out = {"batch": args.batch, "spr_steps": 5, "n_step": 10, "steps_per_call": args.steps, "capacity": args.capacity, "fill": args.fill}
    for case in cases or args.cases:
        out[case] = _update_case(args, case)
    return out


def _update_case(args, case: str) -> dict:
    """ms per gradient step of each `impl/mode` program of one network, one donated state threaded through all."""
    hparams = SPRHyperparams()
    agents = {impl: AGENTS[case](args, impl) for impl in args.impls}
    first = next(iter(agents.values()))
    holder = {"state": _filled_state(first, hparams, args.fill, jax.random.key(0))}
    programs, compile_s = {}, {}
    for impl, agent in agents.items():
        for mode, fn in (("jit", _step_fn(agent, hparams)), ("scan", _scan_fn(agent, hparams, args.steps))):
            if mode not in args.modes:
                continue
            name = f"{impl}/{mode}"
            programs[name], compile_s[name] = _compile(fn, holder["state"], donate=(0,))

    def call(name: str):
        program, calls = programs[name], args.steps if name.endswith("/jit") else 1
        for _ in range(calls):
            holder["state"], metrics = program(holder["state"])
        return holder["state"].grad_steps, metrics

    seconds = _interleaved({name: functools.partial(call, name) for name in programs}, args.rounds)
    ms = {name: 1e3 * s / args.steps for name, s in seconds.items()}
    out = {
        "network": {"frame_shape": list(first.frame_shape), "frame_stack": first.config.frame_stack, "hidden": first.config.hidden,
                    "encoder": [list(layer) for layer in first.network.encoder_layers], "actions": first.network.num_actions},
        "ms_per_step": {name: round(v, 3) for name, v in ms.items()},
        "compile_s": {name: round(v, 2) for name, v in compile_s.items()},
    }  # fmt: skip
    if {"jit", "scan"} <= set(args.modes):
        out["scan_over_jit"] = {impl: round(ms[f"{impl}/scan"] / ms[f"{impl}/jit"], 2) for impl in agents}
    if {"xla", "patches"} <= set(agents):
        out["xla_over_patches"] = {mode: round(ms[f"xla/{mode}"] / ms[f"patches/{mode}"], 2) for mode in args.modes}
    return out


def _full_protocol_hours(args, results: dict) -> dict:
    measured = results.get("update_ms", {}).get("atari")
    out = {}
    if measured is None:
        measured = _update_ms(args, results, cases=["atari"])["atari"]
        out["measured_here"] = measured["ms_per_step"]
    hours = {name: PROTOCOL_GRADIENT_STEPS * ms / 3.6e6 for name, ms in measured["ms_per_step"].items()}
    auto = f"{conv_impl_for_backend('auto')}/scan"
    out.update({
        "gradient_steps": PROTOCOL_GRADIENT_STEPS, "env_steps": PROTOCOL_ENV_STEPS, "atari_size": args.atari_size, "batch": args.batch,
        "hours_of_gradient_steps": {name: round(h, 2) for name, h in hours.items()},
        "headline": auto if auto in hours else min(hours, key=hours.get),
    })  # fmt: skip
    out["headline_hours"] = out["hours_of_gradient_steps"][out["headline"]]
    rates = results.get("atari_env_steps_per_s", {}).get("env_steps_per_s", {})
    if "1" in rates:
        out["hours_of_env_steps_one_env"] = round(PROTOCOL_ENV_STEPS / rates["1"] / 3600, 3)
    return out


# --- 3: replay memory ------------------------------------------------------------------------------------------


def _replay_memory(args, results: dict) -> dict:
    k, n, stack = 5, 10, 4
    sequence_length = stack - 1 + max(n, k) + 1
    size = 84
    replay = SequenceReplay(args.replay_steps, 1, args.batch, sequence_length)
    example = Step(jnp.zeros((size, size, 1), jnp.uint8), jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool))
    start = time.perf_counter()
    state = jax.block_until_ready(jax.jit(replay.init)(example))
    allocate_s = time.perf_counter() - start
    total = replay_bytes(state)
    frames = replay_bytes(state.experience.frame)
    raw = args.replay_steps * size * size
    del state
    return {
        "steps": args.replay_steps, "frame_shape": [size, size, 1], "allocated": True, "allocate_s": round(allocate_s, 3),
        "buffer_bytes": total, "frame_bytes": frames, "other_bytes": total - frames, "raw_frame_bytes": raw,
        "buffer_over_raw": round(total / raw, 4),
        "computed_not_allocated": {"stacks_of_4_bytes": stack * raw, "sequences_of_k_plus_1_bytes": (k + 1) * raw},
        "stacks_of_4_over_buffer": round(stack * raw / total, 3), "sequences_of_k_plus_1_over_buffer": round((k + 1) * raw / total, 3),
    }  # fmt: skip


# --- 4: Atari env throughput -------------------------------------------------------------------------------------


def _atari_env_steps_per_s(args, results: dict) -> dict:
    from jaxrl_si.envs.atari import AtariConfig, AtariEnvs

    rng = np.random.default_rng(0)
    envs = {n: AtariEnvs(AtariConfig("Pong", num_envs=n)) for n in args.env_counts}
    try:
        for e in envs.values():
            e.reset()

        def run(n: int):
            e = envs[n]
            for _ in range(max(args.env_steps // n, 1)):
                e.step(rng.integers(0, e.num_actions, n))

        seconds = _interleaved({str(n): functools.partial(run, n) for n in envs}, args.rounds)
    finally:
        for e in envs.values():
            e.close()
    rate = {name: max(args.env_steps // int(name), 1) * int(name) / s for name, s in seconds.items()}
    return {"game": "Pong", "env_steps_per_timing": args.env_steps, "env_steps_per_s": {name: round(r) for name, r in rate.items()}}


# --- 5: vmapped seeds ----------------------------------------------------------------------------------------------


def _vmap_seeds(args, results: dict) -> dict:
    out = {"seeds": args.seeds, "num_envs": 4, "steps_per_update": 25, "env_steps_per_update": 100, "updates_per_step": 1, "batch": args.batch}
    for impl in args.vmap_impls:
        out[impl] = _vmap_case(args, impl)
    return out


def _vmap_case(args, impl: str) -> dict:
    """Seconds of one `update` of `args.seeds` agents, vmapped in one program and one by one."""
    hparams = SPRHyperparams()
    config = SPRConfig(
        env=MINATAR_ENV, num_envs=4, steps_per_update=25, total_env_steps=10_000, learning_starts=0, updates_per_step=1,
        batch_size=args.batch, hidden=128, shift_pad=1, encoder="minatar", conv_impl=impl, eval_envs=1, eval_steps=1,
    )  # fmt: skip
    agent = SPR.build(config)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    states = jax.jit(jax.vmap(agent.init, in_axes=(None, 0)))(hparams, keys)
    vmapped, compile_vmapped = _compile(jax.vmap(agent.update, in_axes=(None, 0)), hparams, states, donate=(1,))
    states, _ = vmapped(hparams, states)  # the buffers now hold a sequence: every timed step learns
    holder = {"vmapped": states, "single": [jax.tree.map(lambda x, i=i: x[i], states) for i in range(args.seeds)]}
    del states
    single, compile_single = _compile(agent.update, hparams, holder["single"][0], donate=(1,))

    def call_vmapped():
        holder["vmapped"], metrics = vmapped(hparams, holder["vmapped"])
        return metrics

    def call_single():
        outs = [single(hparams, s) for s in holder["single"]]
        holder["single"] = [s for s, _ in outs]
        return [m for _, m in outs]

    seconds = _interleaved({"vmapped": call_vmapped, "separate": call_single}, args.rounds)
    return {
        "vmapped_s": round(seconds["vmapped"], 4), "separate_s": round(seconds["separate"], 4),
        "vmapped_over_separate": round(seconds["vmapped"] / seconds["separate"], 3),
        "ms_per_gradient_step_per_seed": {
            name: round(1e3 * s / (args.seeds * config.steps_per_update), 3) for name, s in seconds.items()},
        "compile_s": {"vmapped": round(compile_vmapped, 2), "single": round(compile_single, 2)},
    }  # fmt: skip


# --- 6: profile of one MinAtar gradient step ----------------------------------------------------------------------


def _profile(args, results: dict) -> dict:
    hparams = SPRHyperparams()
    agent = _minatar_agent(args, "auto")
    state = _filled_state(agent, hparams, args.fill, jax.random.key(0))
    key = jax.random.key(1)
    loss = functools.partial(spr_agent._loss, agent, hparams)
    optimizer = spr_agent.make_optimizer(hparams)

    def sample(state, key):
        drawn = agent.replay.sample(state.replay, key)
        beta = spr_agent.beta_at(agent.config, hparams, state.env_steps)
        return drawn, importance_weights(drawn.probabilities, agent.replay.num_items(state.replay), beta=beta)

    def forward(state, steps, weights, key):
        return loss(state.params, state.target_params, state.q_target_params, steps, weights, key)

    def loss_and_grad(state, steps, weights, key):
        return jax.grad(loss, has_aux=True)(state.params, state.target_params, state.q_target_params, steps, weights, key)

    def optimize(params, opt_state, target_params, q_target_params, grad_steps, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        target_params = optax.incremental_update(params, target_params, hparams.target_momentum)
        copy = (grad_steps + 1) % agent.config.target_update_period == 0
        q_target_params = jax.tree.map(lambda new, old: jnp.where(copy, new, old), params, q_target_params)
        return params, opt_state, target_params, q_target_params

    def set_priorities(replay, indices, priorities):
        return agent.replay.set_priorities(replay, indices, priorities, exponent=hparams.priority_exponent)

    # Compiled in the order of the step, each called on what the pieces before it returned; the
    # pieces that write the state (optimizer, set_priorities, the whole step) donate it, as the step does.
    compiled, compile_s = {}, {}

    def build(name: str, fn: Callable, *fn_args, donate: tuple[int, ...] = ()):
        compiled[name], compile_s[name] = _compile(fn, *fn_args, donate=donate)

    build("gradient_step", _step_fn(agent, hparams), state, donate=(0,))
    state, _ = compiled["gradient_step"](state)  # its outputs: params and targets in distinct buffers
    build("sample", sample, state, key)
    drawn, weights = compiled["sample"](state, key)
    build("forward", forward, state, drawn.steps, weights, key)
    build("loss_and_grad", loss_and_grad, state, drawn.steps, weights, key)
    grads, (_, priorities) = compiled["loss_and_grad"](state, drawn.steps, weights, key)
    learned = (state.params, state.opt_state, state.target_params, state.q_target_params, state.grad_steps)
    build("optimizer", optimize, *learned, grads, donate=(0, 1, 2, 3))
    build("set_priorities", set_priorities, state.replay, drawn.indices, priorities, donate=(0,))
    holder = {"state": state}
    del state, learned

    def call(name: str):
        s = holder["state"]
        if name == "sample":
            return compiled[name](s, key)
        if name in ("forward", "loss_and_grad"):
            return compiled[name](s, drawn.steps, weights, key)
        if name == "optimizer":
            params, opt_state, target, q_target = compiled[name](s.params, s.opt_state, s.target_params, s.q_target_params, s.grad_steps, grads)
            holder["state"] = s.replace(params=params, opt_state=opt_state, target_params=target, q_target_params=q_target)
            return params
        if name == "set_priorities":
            holder["state"] = s.replace(replay=compiled[name](s.replay, drawn.indices, priorities))
            return holder["state"].replay
        holder["state"], metrics = compiled[name](s)
        return metrics

    names = ("sample", "forward", "loss_and_grad", "optimizer", "set_priorities", "gradient_step")
    calls = {name: functools.partial(call, name) for name in names}
    seconds = _interleaved(calls, args.rounds * max(args.steps, 1))  # pieces are short: more rounds
    whole = seconds.pop("gradient_step")
    disjoint = sum(seconds[name] for name in ("sample", "loss_and_grad", "optimizer", "set_priorities"))
    return {
        "network": "minatar", "conv_impl": conv_impl_for_backend("auto"), "batch": args.batch, "capacity": args.capacity,
        "timing_rounds": args.rounds * max(args.steps, 1),
        "ms": {name: round(1e3 * s, 3) for name, s in seconds.items()},
        "share_of_step": {name: round(s / whole, 3) for name, s in seconds.items()},
        "gradient_step_ms": round(1e3 * whole, 3), "sum_of_disjoint_pieces_ms": round(1e3 * disjoint, 3),
        "compile_s": {name: round(s, 2) for name, s in compile_s.items()},
    }  # fmt: skip


SECTION_FUNCTIONS = {
    "update_ms": _update_ms,
    "full_protocol_hours": _full_protocol_hours,
    "replay_memory": _replay_memory,
    "atari_env_steps_per_s": _atari_env_steps_per_s,
    "vmap_seeds": _vmap_seeds,
    "profile": _profile,
}


# --- output ------------------------------------------------------------------------------------------------------


def _print_table(results: dict) -> None:
    """The measurements as short readable lines (the JSON lines above hold everything)."""
    print()
    if "update_ms" in results:
        u = results["update_ms"]
        print(f"update_ms  batch {u['batch']}, K 5, n 10, {u['steps_per_call']} steps per call; ms per gradient step (compile s)")
        for case in CASES:
            if case in u:
                cells = "  ".join(f"{name} {ms:9.2f} ({u[case]['compile_s'][name]:.1f})" for name, ms in u[case]["ms_per_step"].items())
                print(f"  {case:<8} {cells}")
                print(f"  {'':<8} scan/jit {u[case].get('scan_over_jit', '-')}  xla/patches {u[case].get('xla_over_patches', '-')}")
    if "full_protocol_hours" in results:
        f = results["full_protocol_hours"]
        hours = ", ".join(f"{name} {h}" for name, h in f["hours_of_gradient_steps"].items())
        env = f"; 100k env steps of one env: {f['hours_of_env_steps_one_env']} h" if "hours_of_env_steps_one_env" in f else ""
        print(f"full_protocol_hours  200k gradient steps per game and seed: {f['headline_hours']} h ({f['headline']}); all: {hours}{env}")
    if "replay_memory" in results:
        r = results["replay_memory"]
        print(f"replay_memory  {r['steps']:,} steps: buffer {r['buffer_bytes'] / 1e9:.3f} GB = {r['buffer_over_raw']}x raw frames "
              f"({r['raw_frame_bytes'] / 1e9:.3f} GB); 4-stacks would be {r['stacks_of_4_over_buffer']}x the buffer, "
              f"K+1 sequences {r['sequences_of_k_plus_1_over_buffer']}x")  # fmt: skip
    if "atari_env_steps_per_s" in results:
        a = results["atari_env_steps_per_s"]
        print("atari_env_steps_per_s  Pong, random actions: " + ", ".join(f"{n} envs {r:,}/s" for n, r in a["env_steps_per_s"].items()))
    if "vmap_seeds" in results:
        v = results["vmap_seeds"]
        for impl in ("patches", "xla"):
            if impl in v:
                print(f"vmap_seeds  {impl}: {v['seeds']} seeds vmapped {v[impl]['vmapped_s']} s, separate {v[impl]['separate_s']} s "
                      f"per update -> ratio {v[impl]['vmapped_over_separate']}")  # fmt: skip
    if "profile" in results:
        p = results["profile"]
        print(f"profile  MinAtar gradient step ({p['conv_impl']}): {p['gradient_step_ms']} ms; "
              f"disjoint pieces sum {p['sum_of_disjoint_pieces_ms']} ms")  # fmt: skip
        for name, ms in p["ms"].items():
            print(f"  {name:<15} {ms:9.3f} ms {100 * p['share_of_step'][name]:6.1f}%")


if __name__ == "__main__":
    main()
