r"""Intransitive preferences: iterative DPO, SPPO, INPO and SPO self-play on a cyclic game.

Three responses with a rock-paper-scissors preference (`cyclic_preference_matrix`): y0 beats y1
with probability 1/2 + a, y1 beats y2 with 1/2 + c, y2 beats y0 with 1/2 + b. No response is
best; the target of general-preference alignment is the minimax winner (Nash policy)
pi* = (c, b, a) / (a + b + c), which every response ties against. A transitive
Bradley-Terry game (whose winner is a single response) runs beside it as a control.

One self-play iteration, from the current policy pi_t (tabular softmax):

1. sample `groups` x `group_size` responses from pi_t;
2. the oracle compares every pair inside a group: o_ij ~ Bernoulli(P[y_i, y_j]) for i < j,
   o_ji = 1 - o_ij, o_ii = 1/2 (a tournament, as SPPO / INPO pipelines use with K samples);
3. each method fits its loss on that data from pi_t (the previous iterate is held fixed):

* iterative DPO (Rafailov et al. 2023, Eq. 7) on every within-group pair, reference = pi_t:
  a Bradley-Terry fit, with no game-theoretic guarantee when preferences cycle;
* SPPO (Wu et al. 2024, arXiv 2405.00675, Eq. 3.6) on every response, with
  P_hat(y_i ≻ pi_t) = mean_j o_ij including the self-tie (official `compute_prob.py`): the
  square-loss form of multiplicative weights pi_{t+1} ∝ pi_t exp(eta P(y ≻ pi_t)) (Eq. 3.2).
  Theory: the AVERAGE iterate converges to Nash; the last iterate does not (it cycles);
* INPO (Zhang et al. 2024, arXiv 2407.00617, Eq. 8) on every pair, reference = uniform: online
  mirror descent on the tau-regularised game, closed form (Eq. 5)
  pi_{t+1} ∝ exp(P(y ≻ pi_t) / eta) ref^{tau/eta} pi_t^{1 - tau/eta}. Theory: the LAST
  iterate converges, to the regularised equilibrium (close to Nash for small tau);
* SPO (Swamy et al. 2024, arXiv 2401.04056): reward each response with its win rate in the
  group (`win_rates`), leave-one-out baseline (`rloo_advantages`), one REINFORCE step.
  Theory: with a no-regret learner the AVERAGE iterate converges to the minimax winner.

Reported per iteration, for the last iterate pi_t and the running average of pi_1..pi_t:
the duality gap max_y P(y ≻ pi) - 1/2 (0 exactly at Nash) and the total-variation distance to
Nash. Seeds, and the two games, are vmapped; one compiled program per method.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.preference_bandits.common import minimize_logits, total_variation
from jaxrl_si.errors import ConfigError
from jaxrl_si.losses import dpo_loss, inpo_loss, reinforce_loss, rloo_advantages, sppo_loss
from jaxrl_si.preferences import bradley_terry_matrix, cyclic_preference_matrix, duality_gap, win_rates

METHODS = ("dpo", "sppo", "inpo", "spo")
GAMES = ("cyclic", "transitive")


@dataclasses.dataclass(frozen=True)
class IntransitiveConfig:
    """Self-play on a cyclic (and a transitive control) preference over three responses."""

    cycle: tuple[float, float, float] = (0.4, 0.1, 0.2)  # (a, b, c): P(y0≻y1)=1/2+a, P(y2≻y0)=1/2+b, P(y1≻y2)=1/2+c
    transitive_utilities: tuple[float, float, float] = (1.0, 0.0, -1.0)  # control game: P = sigmoid(u_i - u_j)
    initial_policy: tuple[float, float, float] = (0.1, 0.2, 0.7)  # pi_0, away from Nash so cycling shows
    iterations: int = 200  # self-play iterations
    groups: int = 32  # prompts (groups) sampled per iteration
    group_size: int = 4  # K responses per group, compared in a tournament
    inner_steps: int = 50  # Adam steps fitting each iteration's loss (DPO, SPPO, INPO)
    inner_learning_rate: float = 0.1  # their Adam step size
    dpo_beta: float = 1.0  # DPO inverse temperature (reference = previous iterate)
    sppo_eta: float = 1.0  # SPPO multiplicative-weights step
    inpo_eta: float = 1.0  # INPO inverse step size (1/eta = learning rate of the game)
    inpo_tau: float = 0.03  # INPO KL strength towards the uniform reference, <= inpo_eta
    spo_learning_rate: float = 2.0  # SPO: SGD step of the REINFORCE-with-RLOO-baseline update
    seeds: int = 8  # independent seeds, vmapped

    def __post_init__(self):
        for name in ("iterations", "groups", "inner_steps", "seeds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.group_size < 2:
            raise ConfigError(f"`group_size` must be >= 2 (a tournament needs a pair), got {self.group_size}.")
        if len(self.cycle) != 3 or not all(0 < v <= 0.5 for v in self.cycle):
            raise ConfigError(f"`cycle` must be three values in (0, 0.5], got {self.cycle}.")
        pi0 = self.initial_policy
        if len(pi0) != 3 or min(pi0) <= 0 or not math.isclose(sum(pi0), 1.0, abs_tol=1e-6):
            raise ConfigError(f"`initial_policy` must be three positive probabilities summing to 1, got {pi0}.")
        for name in ("inner_learning_rate", "dpo_beta", "sppo_eta", "inpo_eta", "spo_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        if not 0 <= self.inpo_tau <= self.inpo_eta:
            raise ConfigError(f"`inpo_tau` must lie in [0, inpo_eta={self.inpo_eta}], got {self.inpo_tau}.")

    def games(self) -> tuple[np.ndarray, np.ndarray]:
        """Stacked preference matrices `[2, 3, 3]` and their Nash policies `[2, 3]` (cyclic, transitive)."""
        cyclic, nash = cyclic_preference_matrix(*self.cycle)
        utilities = jnp.asarray(self.transitive_utilities, jnp.float32)
        transitive = np.asarray(bradley_terry_matrix(utilities))
        winner = np.eye(3, dtype=np.float32)[int(np.argmax(self.transitive_utilities))]
        return np.stack([cyclic, transitive]), np.stack([nash, winner])


class IntransitiveResults(NamedTuple):
    """Per method: `[games, seeds, iterations + 1, 3]` policies (row 0 = pi_0) and the metrics."""

    config: IntransitiveConfig
    nash: np.ndarray  # [games, 3]
    regularized_nash: np.ndarray  # [3] INPO's fixed point on the cyclic game
    policies: dict[str, np.ndarray]  # method -> [games, seeds, T + 1, 3] last iterates
    gap_last: dict[str, np.ndarray]  # method -> [games, seeds, T + 1]
    gap_average: dict[str, np.ndarray]
    tv_last: dict[str, np.ndarray]
    tv_average: dict[str, np.ndarray]


def tournament(key, preference_matrix, responses):
    """Outcomes `[G, K, K]` of every within-group comparison: o_ij ~ Bernoulli(P[y_i, y_j]), i < j.

    Skew-symmetric (o_ji = 1 - o_ij) with 1/2 on the diagonal.
    """
    k = responses.shape[-1]
    p = preference_matrix[responses[..., :, None], responses[..., None, :]]
    wins = (jax.random.uniform(key, p.shape) < p).astype(jnp.float32)
    upper = jnp.triu(jnp.ones((k, k), bool), 1)
    return jnp.where(upper, wins, jnp.where(upper.T, 1.0 - jnp.swapaxes(wins, -1, -2), 0.5))


def _pairs(responses, outcomes):
    """(chosen, rejected) responses `[G * K(K-1)/2]` for every within-group pair i < j."""
    i, j = np.triu_indices(responses.shape[-1], 1)
    first_wins = outcomes[:, i, j] > 0.5
    y_i, y_j = responses[:, i], responses[:, j]
    return jnp.where(first_wins, y_i, y_j).reshape(-1), jnp.where(first_wins, y_j, y_i).reshape(-1)


def _fit(config, loss_fn, logits):
    new_logits, _ = minimize_logits(loss_fn, logits, steps=config.inner_steps, learning_rate=config.inner_learning_rate)
    return new_logits


def dpo_update(config, logits, responses, outcomes, ref_logp):
    chosen, rejected = _pairs(responses, outcomes)
    prev = jax.nn.log_softmax(logits)

    def loss(theta):
        logp = jax.nn.log_softmax(theta)
        return dpo_loss(logp[chosen], logp[rejected], prev[chosen], prev[rejected], beta=config.dpo_beta).mean()

    return _fit(config, loss, logits)


def sppo_update(config, logits, responses, outcomes, ref_logp):
    win_prob = outcomes.mean(axis=-1).reshape(-1)  # including the self-tie 1/2, as the official code
    ys = responses.reshape(-1)
    prev = jax.nn.log_softmax(logits)[ys]

    def loss(theta):
        return sppo_loss(jax.nn.log_softmax(theta)[ys], prev, win_prob, eta=config.sppo_eta).mean()

    return _fit(config, loss, logits)


def inpo_update(config, logits, responses, outcomes, ref_logp):
    chosen, rejected = _pairs(responses, outcomes)
    prev = jax.nn.log_softmax(logits)

    def loss(theta):
        logp = jax.nn.log_softmax(theta)
        return inpo_loss(
            logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], prev[chosen], prev[rejected],
            eta=config.inpo_eta, tau=config.inpo_tau,
        ).mean()

    return _fit(config, loss, logits)


def spo_update(config, logits, responses, outcomes, ref_logp):
    advantages = rloo_advantages(win_rates(outcomes)).reshape(-1)  # SPO reward, leave-one-out baseline
    ys = responses.reshape(-1)
    loss = lambda theta: reinforce_loss(jax.nn.log_softmax(theta)[ys], advantages).mean()  # noqa: E731
    return logits - config.spo_learning_rate * jax.grad(loss)(logits)


UPDATES = {"dpo": dpo_update, "sppo": sppo_update, "inpo": inpo_update, "spo": spo_update}


def _iteration(config, method, preference_matrix, logits, key):
    key_sample, key_oracle = jax.random.split(key)
    responses = jax.random.categorical(key_sample, logits, shape=(config.groups, config.group_size))
    outcomes = tournament(key_oracle, preference_matrix, responses)
    ref_logp = jnp.full(3, -jnp.log(3.0))  # INPO's reference: uniform
    logits = UPDATES[method](config, logits, responses, outcomes, ref_logp)
    return logits, jax.nn.softmax(logits)


def _self_play(config, method, preference_matrix, key):
    """Policies `[T + 1, 3]` of one seed's run (row 0 = pi_0)."""
    logits0 = jnp.log(jnp.asarray(config.initial_policy, jnp.float32))
    step = functools.partial(_iteration, config, method, preference_matrix)
    _, policies = jax.lax.scan(step, logits0, jax.random.split(key, config.iterations))
    return jnp.concatenate([jax.nn.softmax(logits0)[None], policies])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run_method(config, method, matrices, keys):
    """`[games, seeds, T + 1, 3]` policies: vmapped over games and seeds, one program."""
    per_seed = jax.vmap(functools.partial(_self_play, config, method), in_axes=(None, 0))
    return jax.vmap(per_seed, in_axes=(0, None))(matrices, keys)


def _metrics(matrices, nash, policies):
    """Gap and TV-to-Nash of last and running-average iterates, `[games, seeds, T + 1]` each."""
    counts = jnp.arange(1, policies.shape[-2] + 1, dtype=policies.dtype)[:, None]
    averages = jnp.cumsum(policies, axis=-2) / counts
    gap = jax.vmap(lambda p, pis: jax.vmap(jax.vmap(lambda pi: duality_gap(p, pi)))(pis))
    tv = lambda pis: total_variation(pis, nash[:, None, None, :])  # noqa: E731
    return gap(matrices, policies), gap(matrices, averages), tv(policies), tv(averages)


def regularized_equilibrium(preference_matrix, *, tau: float, iterations: int = 20_000) -> np.ndarray:
    """Fixed point of INPO's closed-form update with a uniform reference (its last-iterate limit).

    Iterates Eq. 5 with a small step (eta = 20 tau): pi <- pi^{1-tau/eta} ref^{tau/eta} exp(P pi / eta).
    """
    p = np.asarray(preference_matrix, np.float64)
    eta, log_pi = 20.0 * max(tau, 1e-3), np.full(3, -np.log(3.0))
    for _ in range(iterations):
        logits = (1 - tau / eta) * log_pi + (tau / eta) * (-np.log(3.0)) + p @ np.exp(log_pi) / eta
        log_pi = logits - np.logaddexp.reduce(logits)
    return np.exp(log_pi)


def run_intransitive(config: IntransitiveConfig) -> IntransitiveResults:
    """Run every method on both games for all seeds; numpy results."""
    matrices, nash = (jnp.asarray(x) for x in config.games())
    keys = jax.random.split(jax.random.key(0), config.seeds)
    policies, gaps_last, gaps_avg, tvs_last, tvs_avg = {}, {}, {}, {}, {}
    for method in METHODS:
        pis = _run_method(config, method, matrices, keys)
        g_last, g_avg, t_last, t_avg = _metrics(matrices, nash, pis)
        policies[method] = np.asarray(pis)
        gaps_last[method], gaps_avg[method] = np.asarray(g_last), np.asarray(g_avg)
        tvs_last[method], tvs_avg[method] = np.asarray(t_last), np.asarray(t_avg)
    reg = regularized_equilibrium(matrices[0], tau=config.inpo_tau)
    return IntransitiveResults(config, np.asarray(nash), reg, policies, gaps_last, gaps_avg, tvs_last, tvs_avg)


THEORY = {
    "dpo": "BT model, no guarantee under cycles",
    "sppo": "MWU: average -> Nash, last iterate cycles",
    "inpo": "regularised OMD: last iterate -> regularised Nash",
    "spo": "no-regret PG: average -> Nash",
}


def _stat(x):
    """mean [min, max] over seeds."""
    return f"{x.mean():.3f} [{x.min():.3f}, {x.max():.3f}]"


def format_intransitive_table(results: IntransitiveResults) -> str:
    """Markdown: per method, gap and TV-to-Nash of last / average iterates at a few iterations."""
    cfg = results.config
    t_final = cfg.iterations
    checkpoints = sorted({min(10, t_final), t_final // 2, t_final})
    lines = [
        f"Cyclic game P(y0≻y1)={0.5 + cfg.cycle[0]:.2f}, P(y1≻y2)={0.5 + cfg.cycle[2]:.2f}, P(y2≻y0)={0.5 + cfg.cycle[1]:.2f}; "
        f"Nash = ({', '.join(f'{v:.3f}' for v in results.nash[0])}); pi_0 = {cfg.initial_policy}; "
        f"{cfg.seeds} seeds (mean [min, max]), {cfg.groups} groups x {cfg.group_size} samples per iteration. "
        f"INPO's regularised equilibrium (tau={cfg.inpo_tau}) = ({', '.join(f'{v:.3f}' for v in results.regularized_nash)}).",
        "",
        "| method | iteration | gap, last iterate | gap, average iterate | TV to Nash, last | TV to Nash, average | theory |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for t in checkpoints:
            lines.append(
                f"| {method.upper()} | {t} | {_stat(results.gap_last[method][0, :, t])} | {_stat(results.gap_average[method][0, :, t])} | "
                f"{_stat(results.tv_last[method][0, :, t])} | {_stat(results.tv_average[method][0, :, t])} | "
                f"{THEORY[method] if t == t_final else ''} |"
            )
    winner = int(np.argmax(cfg.transitive_utilities))
    control = ", ".join(f"{m.upper()} {results.policies[m][1, :, -1, winner].mean():.3f}" for m in METHODS)
    lines += ["", f"Transitive control (winner y{winner}): mean final pi(winner) — {control}."]
    return "\n".join(lines)


def plot_intransitive(results: IntransitiveResults, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """`intransitive_gap.png` (gap vs iteration) and `intransitive_simplex.png` (trajectories)."""
    from matplotlib.figure import Figure

    out_dir = pathlib.Path(out_dir)
    colors = dict(zip(METHODS, ("tab:red", "tab:blue", "tab:green", "tab:purple")))
    iterations = np.arange(results.config.iterations + 1)

    fig = Figure(figsize=(11, 4.2), dpi=120)
    axes = fig.subplots(1, 2)
    for ax, (title, last, avg) in zip(axes, (("duality gap max_y P(y≻π) − 1/2", results.gap_last, results.gap_average),
                                            ("TV distance to Nash", results.tv_last, results.tv_average))):
        for m in METHODS:
            ax.plot(iterations[1:], last[m][0, :, 1:].mean(0), color=colors[m], label=f"{m.upper()} last")
            ax.plot(iterations[1:], avg[m][0, :, 1:].mean(0), color=colors[m], ls="--", label=f"{m.upper()} average")
        ax.set_yscale("log")
        ax.set_xlabel("self-play iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Cyclic preference, mean over {results.config.seeds} seeds: last iterate (solid) vs average iterate (dashed)")
    fig.tight_layout()
    gap_path = out_dir / "intransitive_gap.png"
    fig.savefig(gap_path)

    fig = Figure(figsize=(12, 3.6), dpi=120)
    axes = fig.subplots(1, len(METHODS))
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    to_xy = lambda pi: pi @ corners  # noqa: E731
    for ax, m in zip(axes, METHODS):
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", lw=0.8)
        for k, name in enumerate(("y0", "y1", "y2")):
            ax.annotate(name, corners[k], textcoords="offset points", xytext=(-12 if k == 0 else 4, -10 if k < 2 else 4))
        traj = to_xy(results.policies[m][0, 0])
        avg = to_xy(np.cumsum(results.policies[m][0, 0], 0) / np.arange(1, len(traj) + 1)[:, None])
        ax.plot(*traj.T, color=colors[m], lw=0.8, label="last iterate")
        ax.plot(*avg.T, color="black", lw=1.2, ls="--", label="average iterate")
        ax.scatter(*to_xy(results.nash[0]), marker="*", s=120, color="gold", edgecolor="black", zorder=5, label="Nash")
        ax.set_title(f"{m.upper()} (seed 0)")
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    simplex_path = out_dir / "intransitive_simplex.png"
    fig.savefig(simplex_path)
    return [gap_path, simplex_path]
