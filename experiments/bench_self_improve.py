"""Self-improvement benchmark: sampling, training and log-prob throughput, and where an iteration's time goes.

    python experiments/bench_self_improve.py                 # default sizes, 5 interleaved repeats
    python experiments/bench_self_improve.py --batch 64 --new-tokens 32 --repeats 3
    python experiments/bench_self_improve.py --quick         # tiny sizes (the smoke test)

1. **KV cache against re-encoding** (`sampling`): `nets.sample` (one prefill, then one-token
   decode steps on the KV cache) against `nets.sample_naive` (the whole sequence re-encoded at
   every step), same model (2 layers, width 128, 4 heads, vocabulary 16), same `--batch` of
   16-token prompts, same key, `--new-tokens` new tokens; new tokens per second of each and the
   ratio. Target: >= 5x at 16 new tokens.
2. **Training** (`training`): the agent's `_train` (`epochs x minibatches` Adam steps of
   `_descend`) on its `sft` rows (ground-truth answers of the experiment's task), `--batch` rows
   a step; tokens per second, tokens = rows x (prompt + response) per step.
3. **Log-probs of pairs** (`pair_logps`): `nets.token_logps` of chosen and rejected responses of
   `--batch` pairs in one forward pass (as the DPO-family losses call it), pairs per second.
4. **One iteration's pieces** (`iteration`): the experiment's default config
   (`SelfImproveConfig()`, method "dpo", P = 128 prompts x K = 8 samples, 256 eval prompts), each
   piece of `update` jitted on its own: sampling the P x K responses (`_sample`), the judge's
   verdicts on them (`_verdicts`), the rows with their frozen log-probs under pi_t and pi_ref
   (`_rows`), the Adam updates (`_train`), the chosen / rejected log-prob metrics before and after
   (`_pair_logps` twice), the evaluation (`evaluate`), and one synchronous Orbax checkpoint save of
   the state (`checkpoint.Checkpointer`). Seconds and shares of their sum, against the whole
   `update` jitted as one program.
5. **Compile once** (`compile`): the compile time of `update` (first call minus a compiled call)
   and its jit cache size after the first call and after every later one (1: not recompiled).

The policy is a freshly initialised one (the cost of a step does not depend on the weights:
every scan runs its full length). Each program is compiled ahead of time (compile seconds
reported apart), called once, then timed `--repeats` times to `block_until_ready`, the programs
of one measurement interleaved so drifts of the machine's speed hit all of them; medians. The
numbers are printed and appended as one JSON line, with the machine, to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root, when run as a script

import jax
import jax.numpy as jnp

from experiments.report import machine
from jaxrl_si import checkpoint, nets, sequence
from jaxrl_si.agents import self_improve
from jaxrl_si.agents.self_improve import (
    SelfImprove,
    SelfImproveConfig,
    SelfImproveHyperparams,
)

PROMPT_LENGTH = 16  # prompt tokens of the sampling measurement
SAMPLING_MODEL = {"num_layers": 2, "width": 128, "num_heads": 4}  # the experiment's model
QUICK_MODEL = {"num_layers": 1, "width": 32, "num_heads": 2}
QUICK_AGENT = {
    "task_size": 2, "prompts_per_iteration": 8, "samples_per_prompt": 4, "epochs": 1, "minibatches": 2,
    "eval_prompts": 8, **QUICK_MODEL,
}  # fmt: skip

Programs = dict[str, tuple[Callable, tuple]]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="prompts sampled, rows a training step, pairs scored")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens sampled per prompt (cache vs naive)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per program (median)")
    parser.add_argument("--quick", action="store_true", help="tiny model and iteration, for the smoke test")
    parser.add_argument("--out", default="experiments/results/bench_self_improve.jsonl")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    iteration_config = SelfImproveConfig(**QUICK_AGENT) if args.quick else SelfImproveConfig()
    record = {
        "measure": "self_improve",
        "quick": args.quick,
        "repeats": args.repeats,
        "sampling": _sampling(args),
        "training": _training(args, iteration_config),
        "pair_logps": _pair_logps(args, iteration_config),
        **_iteration(args, iteration_config),
        **machine(),
    }
    _print(record)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    return record



# --- timing ------------------------------------------------------------------------------------------


def _compile(fn: Callable, *args) -> tuple[Callable, float]:
    """`jit(fn)` lowered and compiled ahead of time for `args`, and the seconds that took."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _timed(fn: Callable, *args) -> float:
    """Seconds of one call of `fn(*args)`, its outputs ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def _medians(programs: Programs, repeats: int) -> dict[str, float]:
    """Median seconds per call of each program after one untimed call, the programs interleaved
    in each of `repeats` rounds."""
    for fn, args in programs.values():
        _timed(fn, *args)
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, (fn, args) in programs.items():
            times[name].append(_timed(fn, *args))
    return {name: statistics.median(values) for name, values in times.items()}


def _compiled_programs(functions: dict[str, tuple[Callable, tuple]]) -> tuple[Programs, dict[str, float]]:
    """Each `(fn, args)` compiled ahead of time: `(programs, compile seconds)`."""
    programs, seconds = {}, {}
    for name, (fn, args) in functions.items():
        compiled, seconds[name] = _compile(fn, *args)
        programs[name] = (compiled, args)
    return programs, seconds


# --- 1-3: throughput -----------------------------------------------------------------------------------


def _sampling(args) -> dict:
    """New tokens per second of `nets.sample` (KV cache) and `nets.sample_naive` (re-encoding): the
    same model, prompts and key; compile seconds of each; the cache's speed-up."""
    model = nets.TransformerConfig(
        vocab_size=sequence.VOCAB.size, max_length=PROMPT_LENGTH + args.new_tokens, **(QUICK_MODEL if args.quick else SAMPLING_MODEL)
    )
    sampling = nets.SamplingConfig(max_new_tokens=args.new_tokens, eos_id=sequence.VOCAB.eos_id, pad_id=sequence.VOCAB.pad_id)
    key_params, key_prompts, key = jax.random.split(jax.random.key(0), 3)
    params = nets.init_params(model, key_params)
    prompts = jax.random.randint(key_prompts, (args.batch, PROMPT_LENGTH), 0, model.vocab_size, jnp.int32)
    valid = jnp.ones(prompts.shape, bool)
    functions = {
        name: (lambda p, k, x, v, fn=fn: fn(p, model, k, x, v, sampling), (params, key, prompts, valid))
        for name, fn in (("cache", nets.sample), ("naive", nets.sample_naive))
    }
    programs, compile_s = _compiled_programs(functions)
    seconds = _medians(programs, args.repeats)
    tokens = args.batch * args.new_tokens
    return {
        "batch": args.batch, "prompt_length": PROMPT_LENGTH, "new_tokens": args.new_tokens, "model": dataclasses.asdict(model),
        "tokens_per_s": {name: round(tokens / s) for name, s in seconds.items()},
        "seconds": {name: round(s, 4) for name, s in seconds.items()},
        "compile_s": {name: round(s, 2) for name, s in compile_s.items()},
        "cache_speedup": round(seconds["naive"] / seconds["cache"], 2),
    }  # fmt: skip


def _training(args, base: SelfImproveConfig) -> dict:
    """Tokens per second of the agent's `_train` on `sft` rows, `args.batch` rows a minibatch
    (K := minibatches makes the P x K rows exactly `minibatches` minibatches of `batch`)."""
    config = dataclasses.replace(base, method="sft", prompts_per_iteration=args.batch, samples_per_prompt=max(base.minibatches, 2))
    agent, hparams = SelfImprove.build(config), SelfImproveHyperparams.for_method("sft")
    state = jax.jit(agent.init)(hparams, jax.random.key(0))
    key = jax.random.key(1)
    rows = agent._rows(hparams, state, state.samples, key)  # sft: fresh problems, nothing judged
    programs, compile_s = _compiled_programs({"train": (agent._train, (hparams, state.params, state.opt_state, rows, key))})
    seconds = _medians(programs, args.repeats)["train"]
    steps, per_step = config.epochs * config.minibatches, config.rows // config.minibatches
    length = rows.prompts.shape[1] + rows.responses.shape[1]
    return {
        "rows_per_step": per_step, "steps": steps, "prompt_length": rows.prompts.shape[1], "response_length": rows.responses.shape[1],
        "tokens_per_s": round(steps * per_step * length / seconds), "steps_per_s": round(steps / seconds, 2),
        "seconds": round(seconds, 4), "compile_s": round(compile_s["train"], 2),
    }  # fmt: skip


def _pair_logps(args, config: SelfImproveConfig) -> dict:
    """Pairs per second of `token_logps` of chosen (the answer) and rejected (random tokens)
    responses of `args.batch` prompts of the task, both sides in one forward pass."""
    model = config.model
    key_params, key_problems, key_rejected = jax.random.split(jax.random.key(0), 3)
    params = nets.init_params(model, key_params)
    problems = config.task_spec.sample(key_problems, args.batch)
    chosen, mask = sequence.supervised_targets(problems)
    rejected = jax.random.randint(key_rejected, chosen.shape, 0, model.vocab_size, jnp.int32)

    def summed(params, prompts, valid, chosen, rejected, mask):
        both = lambda x: jnp.concatenate([x, x])  # noqa: E731
        logps = nets.token_logps(params, model, both(prompts), both(valid), jnp.concatenate([chosen, rejected]), both(mask))
        return logps.sum(-1).reshape(2, -1).T

    functions = {"pair_logps": (summed, (params, problems.prompts, problems.prompt_valid, chosen, rejected, mask))}
    programs, compile_s = _compiled_programs(functions)
    seconds = _medians(programs, args.repeats)["pair_logps"]
    return {
        "pairs": args.batch, "prompt_length": problems.prompts.shape[1], "response_length": chosen.shape[1],
        "pairs_per_s": round(args.batch / seconds), "seconds": round(seconds, 4), "compile_s": round(compile_s["pair_logps"], 2),
    }  # fmt: skip


# --- 4-5: one iteration ----------------------------------------------------------------------------------


def _iteration(args, config: SelfImproveConfig) -> dict:
    """Seconds of each piece of one iteration and of the whole `update`, and `update`'s compilation."""
    agent, hparams = SelfImprove.build(config), SelfImproveHyperparams.for_method(config.method)
    state, _ = jax.jit(agent.begin)(hparams, jax.jit(agent.init)(hparams, jax.random.key(0)))
    update = jax.jit(agent.update)
    start = time.perf_counter()
    judged = jax.block_until_ready(update(hparams, state)[0].samples)  # the iteration's pairs, for the pieces
    first_call_s = time.perf_counter() - start
    cache_after_first = update._cache_size()
    pieces, compile_s = _pieces(agent, hparams, state, judged)
    with tempfile.TemporaryDirectory() as directory:
        saver = checkpoint.Checkpointer(directory, max_to_keep=1, async_save=False)
        steps = itertools.count(1)
        save = lambda state: saver.save(next(steps), state, config=dataclasses.asdict(config))  # noqa: E731
        seconds = _medians({**pieces, "checkpoint": (save, (state,)), "update": (update, (hparams, state))}, args.repeats)
        saver.close()
    whole = seconds.pop("update")
    return {
        "iteration": {
            "config": {"method": config.method, "prompts": config.prompts_per_iteration, "samples_per_prompt": config.samples_per_prompt, "eval_prompts": config.eval_prompts},
            "seconds": {name: round(s, 4) for name, s in seconds.items()},
            "share": {name: round(s / sum(seconds.values()), 4) for name, s in seconds.items()},
            "sum_of_parts_s": round(sum(seconds.values()), 4),
            "update_one_program_s": round(whole, 4),
            "update_plus_checkpoint_s": round(whole + seconds["checkpoint"], 4),
            "compile_s": {name: round(s, 2) for name, s in compile_s.items()},
        },
        "compile": {
            "update_first_call_s": round(first_call_s, 2),
            "update_compile_s": round(first_call_s - whole, 2),
            "cache_size_after_first_call": cache_after_first,
            "cache_size_after_all_calls": update._cache_size(),
        },
    }  # fmt: skip


def _pieces(agent: SelfImprove, hparams, state, judged) -> tuple[Programs, dict[str, float]]:
    """`update`'s pieces compiled ahead of time, each called on the outputs of the pieces before it
    (and on `judged`, the samples `update` judged from `state`): `(programs, compile seconds)`."""
    c = agent.config
    keys = {name: self_improve._key(state.key, stream, state.iteration) for name, stream in (
        ("prompt", self_improve.PROMPT_STREAM), ("sample", self_improve.SAMPLE_STREAM), ("judge", self_improve.JUDGE_STREAM), ("train", self_improve.TRAIN_STREAM))}  # fmt: skip
    problems = c.task_spec.sample(keys["prompt"], c.prompts_per_iteration)
    programs, compile_s = {}, {}

    def add(name: str, fn: Callable, *args):
        compiled, compile_s[name] = _compile(fn, *args)
        programs[name] = (compiled, args)
        return compiled(*args)

    def sample(params, problems, key):
        return agent._sample(params, problems, key, temperature=c.temperature, copies=c.samples_per_prompt)

    def verdicts(reward_params, problems, samples, key):
        grouped = jax.tree.map(lambda x: x.reshape(c.prompts_per_iteration, c.samples_per_prompt, *x.shape[1:]), samples)
        return agent._verdicts(reward_params, problems, grouped.tokens, grouped.mask, key)

    def logp_metrics(before, after, judged):
        return agent._pair_logps(before, judged), agent._pair_logps(after, judged)

    samples = add("sampling", sample, state.params, problems, keys["sample"])
    add("judging", verdicts, state.reward_params, problems, samples, keys["judge"])
    rows = add("reference_logps", agent._rows, hparams, state, judged, keys["train"])
    params, opt_state, _ = add("updates", agent._train, hparams, state.params, state.opt_state, rows, keys["train"])
    add("logp_metrics", logp_metrics, state.params, params, judged)
    add("evaluation", agent.evaluate, hparams, state.replace(params=params, opt_state=opt_state))
    return programs, compile_s


# --- output -----------------------------------------------------------------------------------------------


def _print(record: dict) -> None:
    """The measurements as readable lines and a table of the iteration's pieces."""
    s, t, p, i, c = (record[k] for k in ("sampling", "training", "pair_logps", "iteration", "compile"))
    print(f"sampling  batch {s['batch']}, prompt {s['prompt_length']} + {s['new_tokens']} new tokens: "
          f"KV cache {s['tokens_per_s']['cache']:,} tok/s, naive {s['tokens_per_s']['naive']:,} tok/s, "
          f"ratio {s['cache_speedup']}x (target >= 5x); compile {s['compile_s']['cache']} s / {s['compile_s']['naive']} s")  # fmt: skip
    print(f"training  {t['rows_per_step']} rows x ({t['prompt_length']} + {t['response_length']}) tokens, {t['steps']} Adam steps: "
          f"{t['tokens_per_s']:,} tok/s ({t['steps_per_s']} steps/s); compile {t['compile_s']} s")  # fmt: skip
    print(f"log-probs {p['pairs']} pairs ({p['prompt_length']} + {p['response_length']}), chosen + rejected: "
          f"{p['pairs_per_s']:,} pairs/s; compile {p['compile_s']} s")  # fmt: skip
    print(f"iteration {json.dumps(i['config'])}")
    print(f"  {'piece':<16} {'seconds':>9} {'share':>7} {'compile s':>10}")
    for name, seconds in i["seconds"].items():
        compiled = f"{i['compile_s'][name]:.2f}" if name in i["compile_s"] else "-"
        print(f"  {name:<16} {seconds:>9.4f} {100 * i['share'][name]:>6.1f}% {compiled:>10}")
    print(f"  {'sum of parts':<16} {i['sum_of_parts_s']:>9.4f}")
    print(f"  {'update (1 jit)':<16} {i['update_one_program_s']:>9.4f}   (+ checkpoint: {i['update_plus_checkpoint_s']:.4f})")
    print(f"compile   update: first call {c['update_first_call_s']} s, compile ~{c['update_compile_s']} s; "
          f"jit cache size {c['cache_size_after_first_call']} after the first call, {c['cache_size_after_all_calls']} after all")  # fmt: skip
    print(json.dumps(record))


if __name__ == "__main__":
    main()
