r"""Iterative self-improvement of a small causal transformer by its own samples.

One `update` is one iteration of the loop the SPPO, INPO, iterative-DPO ("RLHF Workflow",
Dong et al. 2024, arXiv 2405.07863), ReST-EM and LOOP papers share, as one jitted program:

1. draw P fresh prompts of the task (`jaxrl_si.sequence`) and sample K responses to each from
   the current policy π_t (`nets.sample`, KV cache, temperature `temperature`);
2. judge them (`judge`): the verifier (exact match, a 0/1 reward; preferences P(i ≻ j) =
   step(c_i − c_j)), a Bradley-Terry reward model trained on π_0's samples (`begin`;
   P(i ≻ j) = σ(s_i − s_j)), or an annotator of `sequence.RESPONSE_ORACLES` queried once per
   unordered pair (`preferences.sample_preference_matrix`, responses as length-1 trajectories);
   the win rate of a sample is its row mean of that matrix, itself included (SPPO's P̂);
3. build the method's rows (`sequence_methods`) and take `epochs x minibatches` Adam steps;
4. evaluate on a fixed held-out prompt set (drawn from `eval_seed`, the same for every member):
   greedy and sampled exact match, the win rate against π_0 under the judge, best-of-K under the
   judge and under self-certainty (Kang et al. 2025, arXiv 2502.18581, Eq. 3), and the
   log-probabilities of the iteration's chosen and rejected responses before and after it.

The iteration's judged samples stay in the state (`samples`), so the loop can write them as a
dataset (one TFDS version an iteration) and a resumed run re-draws nothing by hand.

Before the iterations: `warm_start_steps` (supervised training on ground-truth answers, run by
the caller in chunks until the greedy accuracy reaches a target, so iteration 0 is weak but not
trivial) and `begin` (π_ref := the warm-started policy, a fresh optimiser, and the reward model
when the judge is one). Defaults are scaled for a 2-layer, d = 128 model on 3-digit addition:
the papers' β / τ / η were set for 7B models and responses of hundreds of tokens (a target
margin of 1/(2η) = 100 nats for INPO's η = 0.005); here the targets are a few nats (see
`SelfImproveHyperparams`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import nets, preferences, sequence
from jaxrl_si.agents import sequence_methods as methods
from jaxrl_si.agents.sequence_methods import Judged, PairRows, SequenceRows
from jaxrl_si.agents.sequence_reward_model import fit_reward_model
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained

JUDGES = ("verifier", "reward_model", *sequence.RESPONSE_ORACLES)
REFERENCES = ("initial", "previous")
PROMPT_STREAM, SAMPLE_STREAM, JUDGE_STREAM, TRAIN_STREAM, EVAL_STREAM, WARM_STREAM, REWARD_STREAM = range(7)


@dataclasses.dataclass(frozen=True)
class SelfImproveConfig:
    """Static settings: the method, the task, the model, and the sizes of an iteration."""

    method: str = "dpo"  # one of sequence_methods.METHODS
    task: str = "addition"  # sequence.TASKS
    task_size: int = 3  # digits (addition) or list length (sort)
    judge: str = "verifier"  # one of JUDGES
    reference: str = "initial"  # π_ref of DPO / IPO: the warm-started policy, or π_t
    num_layers: int = 2
    width: int = 128
    num_heads: int = 4
    positions: str = "rotary"  # or "learned"
    iterations: int = 3  # self-improvement iterations (updates of the loop)
    prompts_per_iteration: int = 128  # P
    samples_per_prompt: int = 8  # K
    temperature: float = 1.0  # sampling temperature of the iteration's samples
    epochs: int = 2  # passes over the iteration's rows
    minibatches: int = 4  # per epoch: every method takes epochs x minibatches Adam steps
    eval_prompts: int = 256  # held-out prompts of every evaluation
    eval_seed: int = 20_241_130  # the held-out set's key (the same for every member)
    warm_start_batch: int = 64  # ground-truth examples per supervised warm-start step
    reward_model_prompts: int = 256  # prompts (x K samples of π_0) the reward model learns from
    reward_model_steps: int = 400  # its Adam steps (pairs of `prompts_per_iteration` a step)

    def __post_init__(self):
        for name, valid in (("method", methods.METHODS), ("judge", JUDGES), ("reference", REFERENCES)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"SelfImproveConfig.{name} must be one of {valid}, got {getattr(self, name)!r}.")
        for name in ("iterations", "prompts_per_iteration", "samples_per_prompt", "epochs", "minibatches", "eval_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SelfImproveConfig.{name} must be an int >= 1, got {value!r}.")
        if self.samples_per_prompt < 2:
            raise ConfigError(f"SelfImproveConfig.samples_per_prompt must be >= 2 (pairs and group baselines need two samples), got {self.samples_per_prompt}.")
        if self.rows % self.minibatches:
            raise ConfigError(f"SelfImproveConfig.minibatches={self.minibatches} must divide the {self.rows} rows of a {self.method} iteration.")
        if self.method == "rest" and self.judge != "verifier":
            raise ConfigError("SelfImproveConfig: method 'rest' keeps the samples the verifier accepts; use judge='verifier'.")
        if not self.temperature > 0:
            raise ConfigError(f"SelfImproveConfig.temperature must be > 0, got {self.temperature!r}.")
        self.model  # validates the model sizes (ConfigError naming the field)

    @property
    def task_spec(self):
        return sequence.make_task(self.task, self.task_size)

    @property
    def model(self) -> nets.TransformerConfig:
        spec = self.task_spec
        return nets.TransformerConfig(
            vocab_size=sequence.VOCAB.size,
            num_layers=self.num_layers,
            width=self.width,
            num_heads=self.num_heads,
            max_length=spec.prompt_length + spec.max_new_tokens,
            positions=self.positions,
        )

    def sampling(self, temperature: float) -> nets.SamplingConfig:
        return nets.SamplingConfig(
            max_new_tokens=self.task_spec.max_new_tokens, temperature=temperature, eos_id=sequence.VOCAB.eos_id, pad_id=sequence.VOCAB.pad_id
        )

    @property
    def rows(self) -> int:
        """Rows an iteration trains on: one pair a prompt, or one sequence a sample."""
        return self.prompts_per_iteration * (1 if self.method in methods.PAIRWISE else self.samples_per_prompt)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SelfImproveConfig:
        check_known_keys(cls.__name__, values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


class SelfImproveHyperparams(flax.struct.PyTreeNode):
    """Traced hyperparameters (a sweep vmaps over them). `for_method` gives each method's defaults."""

    learning_rate: float = 1e-4  # Adam during the iterations
    warm_start_learning_rate: float = 1e-3  # Adam during the supervised warm start
    max_grad_norm: float = 1.0  # global-norm clip
    beta: float = 0.1  # DPO's β (paper 0.1)
    nll_coef: float = 0.0  # RPO's weight of NLL(y_w) / |y_w| in DPO (Pang et al. 2024: 1)
    tau: float = 0.1  # IPO's τ (target margin 1/(2τ) = 5 nats; TRL's default) and INPO's τ
    eta: float = 0.1  # INPO's η (target 1/(2η) = 5 nats) and SPPO's η (targets ±η/2)
    clip_eps: float = 0.2  # RLOO / GRPO ratio clip (LOOP: 0.1, its official code)
    kl_coef: float = 0.0  # RLOO's KL-in-reward β (TRL 0.05) and GRPO's k3 β (paper 0.04)
    reward_model_learning_rate: float = 3e-4

    @classmethod
    def for_method(cls, method: str, **overrides) -> SelfImproveHyperparams:
        """Defaults of `method`: INPO τ = η / 3 (its App. B), SPPO η = 10 (targets ±5 nats),
        LOOP ε = 0.1, RLOO β_KL = 0.05, GRPO β_KL = 0.04."""
        defaults = {
            "inpo": {"eta": 0.1, "tau": 0.1 / 3},
            "sppo": {"eta": 10.0},
            "loop": {"clip_eps": 0.1},
            "rloo": {"kl_coef": 0.05},
            "grpo": {"kl_coef": 0.04},
        }.get(method, {})
        return cls(**{**defaults, **overrides})


class SelfImproveState(flax.struct.PyTreeNode):
    """Everything an iteration needs to continue exactly."""

    params: Any  # π (the policy being improved)
    ref_params: Any  # π_ref = π_0, the warm-started policy (set by `begin`)
    opt_state: Any
    reward_params: Any  # the Bradley-Terry reward model's (`begin` trains it; unused by other judges)
    key: PRNGKeyArray  # fixed; every draw is fold_in(fold_in(key, stream), counter)
    iteration: Array  # int32 [], iterations done
    warm_start_steps: Array  # int32 [], supervised steps done
    samples: Judged  # the last iteration's judged samples (zeros before the first)


@dataclasses.dataclass(frozen=True, eq=False)
class SelfImprove:
    """The config and the objects built from it; never traced."""

    config: SelfImproveConfig
    constrain: Constrain = unconstrained  # layout hook for sample rows, minibatches and eval prompts

    @classmethod
    def build(cls, config: SelfImproveConfig, *, constrain: Constrain = unconstrained) -> SelfImprove:
        return cls(config, constrain)

    @property
    def num_updates(self) -> int:
        return self.config.iterations

    @property
    def env_steps_per_update(self) -> int:
        """Responses sampled per iteration (the progress bar's unit)."""
        return self.config.prompts_per_iteration * self.config.samples_per_prompt

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        c = self.config
        return {"samples": self.env_steps_per_update, "minibatch_rows": c.rows // c.minibatches, "eval_prompts": c.eval_prompts, "warm_start_batch": c.warm_start_batch}

    # --- state -------------------------------------------------------------------------------

    def init(self, hparams: SelfImproveHyperparams, key: PRNGKeyArray) -> SelfImproveState:
        """A random policy (and reward model), a fresh Adam, no samples yet."""
        key_policy, key_reward, key = jax.random.split(key, 3)
        params = nets.init_params(self.config.model, key_policy)
        reward_params = nets.init_params(self.config.model, key_reward, head="scalar")
        samples = jax.tree.map(jnp.zeros_like, jax.eval_shape(self._judge, hparams, params, reward_params, key, key, key))
        zero = jnp.zeros((), jnp.int32)
        return SelfImproveState(params, params, _optimizer(hparams).init(params), reward_params, key, zero, zero, samples)

    def begin(self, hparams: SelfImproveHyperparams, state: SelfImproveState) -> tuple[SelfImproveState, dict[str, Array]]:
        """Start the iterations from the warm-started policy: π_ref := π, a fresh Adam, and the
        reward model trained on π_0's samples when the judge is one (metrics `reward_model/*`)."""
        state = state.replace(ref_params=state.params, opt_state=_optimizer(hparams).init(state.params))
        if self.config.judge != "reward_model":
            return state, {}
        return self._train_reward_model(hparams, state)

    def train(self, hparams: SelfImproveHyperparams, key: PRNGKeyArray) -> tuple[SelfImproveState, dict[str, Array]]:
        """A whole run without a warm start, as one program: `init`, `begin`, `iterations` updates
        (metrics `[iterations]`). The experiment warm-starts first (`warm_start_steps`)."""
        state, _ = self.begin(hparams, self.init(hparams, key))
        return jax.lax.scan(lambda s, _: self.update(hparams, s), state, None, length=self.config.iterations)

    # --- supervised warm start -----------------------------------------------------------------

    def warm_start_steps(self, hparams: SelfImproveHyperparams, state: SelfImproveState, active: Array, steps: int):
        """`steps` supervised Adam steps on fresh ground-truth answers when `active` (else the
        state unchanged), then the greedy held-out accuracy; `(state, accuracy)`."""

        def step(state, _):
            key = _key(state.key, WARM_STREAM, state.warm_start_steps)
            problems = self.constrain(self.config.task_spec.sample(key, self.config.warm_start_batch))
            rows = methods.supervised_rows(problems)
            optimizer = _optimizer(hparams, hparams.warm_start_learning_rate)
            params, opt_state, loss = methods.descend(self.config.model, "sft", optimizer, hparams, state.params, state.opt_state, rows)
            moved = state.replace(params=params, opt_state=opt_state, warm_start_steps=state.warm_start_steps + 1)
            return jax.tree.map(lambda a, b: jnp.where(active, a, b), moved, state), loss

        state, _ = jax.lax.scan(step, state, None, length=steps)
        return state, self.greedy_accuracy(state.params)

    def greedy_accuracy(self, params) -> Float[Array, ""]:
        """Exact match of greedy decoding on the held-out prompts."""
        problems = self.eval_problems()
        samples = self._sample(params, problems, jax.random.key(0), temperature=0.0)
        return sequence.exact_match(samples.tokens, samples.mask, problems.answers).mean()

    def eval_problems(self) -> sequence.Problems:
        return self.constrain(self.config.task_spec.sample(jax.random.key(self.config.eval_seed), self.config.eval_prompts))

    # --- one iteration ---------------------------------------------------------------------------

    def update(self, hparams: SelfImproveHyperparams, state: SelfImproveState) -> tuple[SelfImproveState, dict[str, Array]]:
        """Sample, judge, train, evaluate: one self-improvement iteration."""
        keys = {name: _key(state.key, stream, state.iteration) for name, stream in (("prompt", PROMPT_STREAM), ("sample", SAMPLE_STREAM), ("judge", JUDGE_STREAM), ("train", TRAIN_STREAM))}
        judged = self._judge(hparams, state.params, state.reward_params, keys["prompt"], keys["sample"], keys["judge"])
        rows = self._rows(hparams, state, judged, keys["train"])
        before = self._pair_logps(state.params, judged)
        params, opt_state, loss = self._train(hparams, state.params, state.opt_state, rows, keys["train"])
        after = self._pair_logps(params, judged)
        state = state.replace(params=params, opt_state=opt_state, iteration=state.iteration + 1, samples=judged)
        metrics = {
            "loss/train": loss,
            "samples/accuracy": judged.correct.mean(),
            "samples/reward": judged.rewards.mean(),
            "pairs/valid_fraction": judged.pair_valid.mean(),
            **_logp_metrics(before, after, judged.pair_valid),
            **self.evaluate(hparams, state),
        }
        return state, metrics

    def _sample(self, params, problems: sequence.Problems, key: PRNGKeyArray, *, temperature: float, copies: int = 1) -> nets.Samples:
        """`copies` responses to each prompt, rows `p * copies + c` (`[P copies, N]`)."""
        prompts = self.constrain(jnp.repeat(problems.prompts, copies, axis=0))
        valid = self.constrain(jnp.repeat(problems.prompt_valid, copies, axis=0))
        return nets.sample(params, self.config.model, key, prompts, valid, self.config.sampling(temperature))

    def _judge(self, hparams, params, reward_params, key_prompt, key_sample, key_judge) -> Judged:
        """P prompts, K samples each, and the judge's rewards, win rates and best-vs-worst pairs."""
        del hparams
        c = self.config
        problems = c.task_spec.sample(key_prompt, c.prompts_per_iteration)
        samples = self._sample(params, problems, key_sample, temperature=c.temperature, copies=c.samples_per_prompt)
        grouped = jax.tree.map(lambda x: x.reshape(c.prompts_per_iteration, c.samples_per_prompt, *x.shape[1:]), samples)
        rewards, matrix = self._verdicts(reward_params, problems, grouped.tokens, grouped.mask, key_judge)
        win_rates = matrix.mean(-1)
        chosen, rejected = jnp.argmax(win_rates, -1), jnp.argmin(win_rates, -1)
        beats = jnp.take_along_axis(methods.take_sample(matrix, chosen), rejected[:, None], axis=1)[:, 0]
        correct = sequence.exact_match(grouped.tokens, grouped.mask, problems.answers[:, None])
        return Judged(problems.prompts, problems.prompt_valid, problems.answers, grouped.tokens, grouped.mask, grouped.logps, rewards, win_rates, correct, chosen, rejected, beats > 0.5)

    def _verdicts(self, reward_params, problems: sequence.Problems, responses, mask, key) -> tuple[Float[Array, "P K"], Float[Array, "P K K"]]:
        """The judge's reward `[P, K]` and preference matrix P(i ≻ j) `[P, K, K]` (diagonal ½)."""
        judge = self.config.judge
        if judge == "verifier":
            correct = sequence.exact_match(responses, mask, problems.answers[:, None])
            return correct, 0.5 * (1.0 + jnp.sign(correct[..., :, None] - correct[..., None, :]))
        if judge == "reward_model":
            scores = self._scores(reward_params, problems, responses, mask)
            return scores, jax.nn.sigmoid(scores[..., :, None] - scores[..., None, :])
        oracle = sequence.response_oracle(judge)
        trajectories = sequence.response_trajectories(responses, mask, problems.answers[:, None])
        keys = jax.random.split(key, responses.shape[0])
        matrix = jax.vmap(lambda k, t: preferences.sample_preference_matrix(oracle, k, t))(keys, trajectories)
        return matrix.mean(-1), matrix

    def _scores(self, reward_params, problems: sequence.Problems, responses, mask) -> Float[Array, "P K"]:
        """The reward model's score of each of K responses to each prompt."""
        k = responses.shape[1]
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        prompts, valid = jnp.repeat(problems.prompts, k, axis=0), jnp.repeat(problems.prompt_valid, k, axis=0)
        return nets.sequence_scores(reward_params, self.config.model, prompts, valid, flat(responses), flat(mask)).reshape(-1, k)

    def _rows(self, hparams, state: SelfImproveState, judged: Judged, key) -> PairRows | SequenceRows:
        """The method's training rows, with the frozen log-probs (π_t, π_ref) they need."""
        c = self.config
        ref_params = state.params if c.reference == "previous" and c.method in ("dpo", "ipo") else state.ref_params
        logps = lambda p, prompts, valid, y, m: nets.token_logps(p, c.model, prompts, valid, y, m)  # noqa: E731
        if c.method == "sft":
            problems = c.task_spec.sample(key, c.rows)
            return methods.supervised_rows(problems)
        if c.method in methods.PAIRWISE:
            sides = [methods.sample_rows(judged, judged.chosen), methods.sample_rows(judged, judged.rejected)]
            summed = lambda p, s: jnp.sum(logps(p, s.prompts, s.prompt_valid, s.responses, s.mask), -1)  # noqa: E731
            prev = jnp.stack([summed(state.params, s) for s in sides], -1)
            ref = jnp.stack([summed(ref_params, s) for s in sides], -1) if methods.uses_reference(c.method, c.reference) else prev
            win_rates = jnp.stack([methods.take_sample(judged.win_rates, i) for i in (judged.chosen, judged.rejected)], -1)
            weights = judged.pair_valid.astype(jnp.float32) if c.method != "sppo" else jnp.ones_like(win_rates[:, 0])
            sides = [s.replace(weights=weights) for s in sides]
            return PairRows(sides[0], sides[1], win_rates, prev, ref)
        prompts, valid, responses, mask = methods.flatten_samples(judged)
        behaviour = judged.behaviour_logps.reshape(mask.shape)
        ref = logps(state.ref_params, prompts, valid, responses, mask) if methods.uses_reference(c.method, c.reference) else behaviour
        kl = jnp.sum(jnp.where(mask, behaviour - ref, 0.0), -1).reshape(judged.rewards.shape)
        advantages = methods.sample_advantages(c.method, judged.rewards, kl, hparams.kl_coef).reshape(-1)
        weights = judged.correct.reshape(-1) if c.method == "rest" else jnp.ones_like(advantages)
        return SequenceRows(prompts, valid, responses, mask, behaviour, ref, advantages, weights)

    def _train(self, hparams, params, opt_state, rows, key):
        """`epochs x minibatches` Adam steps over shuffled minibatches of `rows`; mean loss."""
        c = self.config
        size = c.rows // c.minibatches
        orders = jnp.concatenate([jax.random.permutation(jax.random.fold_in(key, e), c.rows) for e in range(c.epochs)])
        batches = orders.reshape(c.epochs * c.minibatches, size)

        def step(carry, index):
            params, opt_state = carry
            batch = self.constrain(jax.tree.map(lambda x: x[index], rows))
            params, opt_state, loss = methods.descend(c.model, c.method, _optimizer(hparams), hparams, params, opt_state, batch)
            return (params, opt_state), loss

        (params, opt_state), loss = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state, loss.mean()

    def _pair_logps(self, params, judged: Judged) -> Float[Array, "P 2"]:
        """Summed log π of each prompt's chosen and rejected sample."""
        sides = [methods.sample_rows(judged, judged.chosen), methods.sample_rows(judged, judged.rejected)]
        return jnp.stack([jnp.sum(nets.token_logps(params, self.config.model, s.prompts, s.prompt_valid, s.responses, s.mask), -1) for s in sides], -1)

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(self, hparams, state: SelfImproveState) -> dict[str, Array]:
        """Held-out exact match (greedy, sampled, best-of-K by judge and by self-certainty) and the
        win rate against π_0 under the judge; evaluation k (after k iterations) draws from counter k."""
        del hparams
        c = self.config
        problems = self.eval_problems()
        key_sampled, key_initial, key_many, key_judge = jax.random.split(_key(state.key, EVAL_STREAM, state.iteration), 4)
        greedy = self._sample(state.params, problems, key_sampled, temperature=0.0)
        sampled = self._sample(state.params, problems, key_sampled, temperature=c.temperature)
        initial = self._sample(state.ref_params, problems, key_initial, temperature=c.temperature)
        many = self._sample(state.params, problems, key_many, temperature=c.temperature, copies=c.samples_per_prompt)
        correct = lambda s, answers: sequence.exact_match(s.tokens, s.mask, answers)  # noqa: E731
        pair = jax.tree.map(lambda a, b: jnp.stack([a, b], 1), sampled, initial)  # [E, 2, N]: π against π_0
        _, head_to_head = self._verdicts(state.reward_params, problems, pair.tokens, pair.mask, key_judge)
        grouped = jax.tree.map(lambda x: x.reshape(c.eval_prompts, c.samples_per_prompt, *x.shape[1:]), many)
        many_correct = correct(grouped, problems.answers[:, None])
        judge_rewards, _ = self._verdicts(state.reward_params, problems, grouped.tokens, grouped.mask, key_judge)
        certainty = self._self_certainty(state.params, problems, many).reshape(c.eval_prompts, c.samples_per_prompt)
        pick = lambda score: methods.take_sample(many_correct[..., None], jnp.argmax(score, -1))[:, 0]  # noqa: E731
        return {
            "eval/greedy_accuracy": correct(greedy, problems.answers).mean(),
            "eval/sampled_accuracy": correct(sampled, problems.answers).mean(),
            "eval/win_rate_vs_initial": head_to_head[:, 0, 1].mean(),
            "eval/best_of_k_judge_accuracy": pick(judge_rewards).mean(),
            "eval/best_of_k_self_certainty_accuracy": pick(certainty).mean(),
            "eval/pass_at_k": many_correct.max(-1).mean(),
        }

    def _self_certainty(self, params, problems: sequence.Problems, samples: nets.Samples) -> Float[Array, "R"]:
        """Self-certainty of each response: mean over its tokens of KL(U ‖ π(· | x, y_<t))."""
        k = samples.tokens.shape[0] // problems.prompts.shape[0]
        prompts, valid = jnp.repeat(problems.prompts, k, axis=0), jnp.repeat(problems.prompt_valid, k, axis=0)
        return nets.self_certainty(params, self.config.model, prompts, valid, samples.tokens, samples.mask)

    def _train_reward_model(self, hparams, state: SelfImproveState) -> tuple[SelfImproveState, dict[str, Array]]:
        """The Bradley-Terry reward model fitted to "bt" labels of π_0's samples
        (`sequence_reward_model.fit_reward_model`); metrics `reward_model/loss`, `/accuracy`."""
        c = self.config
        key_prompt, key_sample, key_steps, key_held_out = jax.random.split(_key(state.key, REWARD_STREAM, 0), 4)
        problems = c.task_spec.sample(key_prompt, c.reward_model_prompts)
        samples = self._sample(state.params, problems, key_sample, temperature=c.temperature, copies=c.samples_per_prompt)
        grouped = jax.tree.map(lambda x: x.reshape(c.reward_model_prompts, c.samples_per_prompt, *x.shape[1:]), samples)
        reward_params, metrics = fit_reward_model(
            c.model, state.reward_params, problems, grouped.tokens, grouped.mask, key_steps, key_held_out,
            learning_rate=hparams.reward_model_learning_rate, max_grad_norm=hparams.max_grad_norm,
            steps=c.reward_model_steps, batch_size=c.prompts_per_iteration, constrain=self.constrain,
        )  # fmt: skip
        return state.replace(reward_params=reward_params), metrics


def _key(key: PRNGKeyArray, stream: int, counter: Array) -> PRNGKeyArray:
    """fold_in(fold_in(key, stream), counter): streams apart before counters."""
    return jax.random.fold_in(jax.random.fold_in(key, stream), counter)


def _optimizer(hparams: SelfImproveHyperparams, learning_rate=None) -> optax.GradientTransformation:
    """Adam after a global-norm clip, from traced hyperparameters."""
    rate = hparams.learning_rate if learning_rate is None else learning_rate
    return optax.chain(optax.clip_by_global_norm(hparams.max_grad_norm), optax.adam(rate))


def _logp_metrics(before: Float[Array, "P 2"], after: Float[Array, "P 2"], valid) -> dict[str, Array]:
    """Mean summed log π of the valid pairs' chosen and rejected samples, before and after the update."""
    w = valid.astype(jnp.float32)
    mean = lambda x: methods.weighted_mean(x, w)  # noqa: E731
    return {
        "logps/chosen_before": mean(before[:, 0]),
        "logps/rejected_before": mean(before[:, 1]),
        "logps/chosen_after": mean(after[:, 0]),
        "logps/rejected_after": mean(after[:, 1]),
    }
