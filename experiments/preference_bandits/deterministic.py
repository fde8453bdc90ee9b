r"""Deterministic preferences: DPO loses its KL regularisation, IPO keeps it.

Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
Preferences", arXiv 2310.12036, Sec. 4.2. A softmax policy over K responses with a total,
deterministic order y0 ≻ y1 ≻ ... ≻ y_{K-1} (y0 always wins). The dataset is the population of
pairs y, y' ~ pi_ref x pi_ref with y != y', each labelled by the order, so the pair
(winner i, loser j), i < j, has probability

.. math:: W_{ij} = \frac{2\,\pi_{ref}(i)\,\pi_{ref}(j)}{1 - \sum_k \pi_{ref}(k)^2}.

Both losses are trained on this exact expected loss (no sampling noise), from the reference:

* DPO, -log sigma(beta h_ij) with h_ij = r_i - r_j, r = log pi - log pi_ref: y0 only ever
  wins, so dL/d logit_0 = -beta sum_j W_0j sigma(-beta h_0j) < 0 everywhere. There is no
  stationary point for ANY beta: the margins diverge and pi -> delta_{y0}. KL(pi || pi_ref)
  tends to log(1 / pi_ref(y0)) (finite, but the same for every beta); the reverse KL and the
  margins are unbounded. beta only sets how fast the run gets there (early stopping).
* IPO, (h_ij - 1/(2 tau))^2: a weighted least-squares problem in r, solved in closed form by
  `ipo_optimum`. Its normal equations give r_k = (P(y_k ≻ pi_ref) - 1/2) / tau + const, i.e.
  the paper's optimum for Psi = identity, pi* ∝ pi_ref exp(P(y ≻ pi_ref) / tau): a finite tilt
  of the reference that shrinks to pi_ref as tau -> inf.

The beta and tau grids run as one `jax.jit` of two `jax.vmap`s, compiled once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from experiments.preference_bandits.common import kl_divergence, minimize_logits_recorded
from jaxrl_si.errors import ConfigError
from jaxrl_si.losses import dpo_loss, ipo_loss

PairLoss = Callable[..., Float[Array, "B"]]  # (pi_w, pi_l, ref_w, ref_l) log-probs -> [B] loss


@dataclasses.dataclass(frozen=True)
class DeterministicConfig:
    """DPO vs IPO on a bandit whose first response always wins."""

    reference_probs: tuple[float, ...] = (0.2, 0.3, 0.5)  # pi_ref over y0 ≻ y1 ≻ ...; the winner least likely
    betas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)  # DPO inverse temperatures (KL strength)
    taus: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)  # IPO KL strengths; same values as betas, like for like
    steps: int = 20_000  # Adam steps on the exact population loss
    learning_rate: float = 0.05  # Adam's peak step size, cosine-decayed to 0 over `steps`
    record_every: int = 10  # record the policy every this many steps; must divide `steps`

    def __post_init__(self):
        probs = self.reference_probs
        if len(probs) < 2 or any(not p > 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ConfigError(f"`reference_probs` must be >= 2 positive probabilities summing to 1, got {probs}.")
        for name in ("betas", "taus"):
            values = getattr(self, name)
            if len(values) == 0 or any(not (v > 0 and math.isfinite(v)) for v in values):
                raise ConfigError(f"`{name}` must be a non-empty tuple of positive finite values, got {values}.")
        if self.steps < 1:
            raise ConfigError(f"`steps` must be >= 1, got {self.steps}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"`learning_rate` must be positive and finite, got {self.learning_rate}.")
        if self.record_every < 1 or self.steps % self.record_every:
            raise ConfigError(f"`record_every` must be >= 1 and divide `steps` ({self.steps}), got {self.record_every}.")


class DeterministicResults(NamedTuple):
    """Trajectories recorded at `steps`; B = len(betas), T = len(taus), R = len(steps), K responses."""

    config: DeterministicConfig
    steps: np.ndarray  # [R] training step of each record (0 = the reference)
    dpo_policies: np.ndarray  # [B, R, K]
    ipo_policies: np.ndarray  # [T, R, K]
    dpo_kl: np.ndarray  # [B, R] KL(pi || pi_ref)
    ipo_kl: np.ndarray  # [T, R]
    dpo_margins: np.ndarray  # [B, R] log-ratio margin h(y0, y_{K-1}) = r(y0) - r(y_{K-1})
    ipo_margins: np.ndarray  # [T, R]
    ipo_optima: np.ndarray  # [T, K] closed-form IPO optimum (float64)
    ipo_optimum_kl: np.ndarray  # [T]


def deterministic_pair_weights(reference_probs) -> np.ndarray:
    """`[K, K]` W[i, j] = P(pair {y_i, y_j} drawn from pi_ref x pi_ref, y != y', with y_i the winner).

    Under the order y0 ≻ y1 ≻ ..., W is strictly upper triangular: W_ij = 2 ref_i ref_j / Z (i < j).
    """
    ref = np.asarray(reference_probs, dtype=np.float64)
    weights = np.triu(2.0 * np.outer(ref, ref), k=1)
    return weights / weights.sum()


def population_loss(
    logits: Float[Array, "K"],
    loss_fn: PairLoss,
    reference_probs: Float[Array, "K"],
    pair_weights: Float[Array, "K K"],
) -> Float[Array, ""]:
    """sum_ij W_ij loss(log pi(y_i), log pi(y_j), log ref(y_i), log ref(y_j)), pi = softmax(logits)."""
    num = logits.shape[-1]
    chosen, rejected = np.divmod(np.arange(num * num), num)  # every ordered pair (i, j), flattened
    log_pi = jax.nn.log_softmax(logits)
    log_ref = jnp.log(reference_probs)
    per_pair = loss_fn(log_pi[chosen], log_pi[rejected], log_ref[chosen], log_ref[rejected])
    return jnp.sum(jnp.reshape(pair_weights, -1) * per_pair)


def train_policy(
    loss_fn: PairLoss,
    reference_probs: Float[Array, "K"],
    pair_weights: Float[Array, "K K"],
    *,
    steps: int,
    record_every: int,
    learning_rate: float | Float[Array, ""],
) -> tuple[Float[Array, "R K"], Float[Array, "steps"]]:
    """Adam on `population_loss` from the reference logits; returns the logits trajectory and losses.

    The step size is cosine-decayed from `learning_rate` to 0. With a constant one, Adam never
    settles at IPO's finite optimum: its second moment decays with the gradient until the
    effective step lr / sqrt(v) exceeds the stability limit of the quadratic, and the iterate
    bursts away (policy errors up to ~5e-3 recur every few thousand steps). The same renormalisation is what
    drives DPO's vanishing gradients quickly to infinity.
    """
    reference_probs = jnp.asarray(reference_probs)
    pair_weights = jnp.asarray(pair_weights, reference_probs.dtype)
    objective = functools.partial(
        population_loss, loss_fn=loss_fn, reference_probs=reference_probs, pair_weights=pair_weights
    )
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    return minimize_logits_recorded(
        objective, jnp.log(reference_probs), steps=steps, record_every=record_every, learning_rate=schedule
    )


def ipo_optimum(reference_probs, tau: float, pair_weights) -> np.ndarray:
    """Closed-form minimiser of IPO's population loss: `[K]` pi* ∝ pi_ref exp(d).

    d solves the weighted least squares min_d sum_ij W_ij (d_i - d_j - 1/(2 tau))^2 (d is the
    log-ratio r = log pi - log pi_ref, defined up to a constant; lstsq returns the min-norm d).
    """
    if not tau > 0:
        raise ValueError(f"`tau` must be > 0, got {tau}.")
    ref = np.asarray(reference_probs, dtype=np.float64)
    weights = np.asarray(pair_weights, dtype=np.float64)
    winners, losers = np.nonzero(weights)
    sqrt_w = np.sqrt(weights[winners, losers])
    design = np.zeros((len(winners), len(ref)))
    design[np.arange(len(winners)), winners] = sqrt_w
    design[np.arange(len(winners)), losers] = -sqrt_w
    d = np.linalg.lstsq(design, sqrt_w / (2.0 * tau), rcond=None)[0]
    logits = np.log(ref) + d
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def _trajectory_stats(logit_trajectory, reference_probs):
    """Policies, KL(pi || pi_ref) and the winner-vs-last margin along `[..., R, K]` logits."""
    log_pi = jax.nn.log_softmax(logit_trajectory)
    ratio = log_pi - jnp.log(reference_probs)
    policies = jnp.exp(log_pi)
    return policies, kl_divergence(policies, reference_probs), ratio[..., 0] - ratio[..., -1]


@functools.partial(jax.jit, static_argnames=("steps", "record_every"))
def _train_grid(reference_probs, pair_weights, betas, taus, learning_rate, *, steps, record_every):
    """Both sweeps, vmapped over the hyperparameter, in one compiled program."""
    train = functools.partial(
        train_policy,
        reference_probs=reference_probs,
        pair_weights=pair_weights,
        steps=steps,
        record_every=record_every,
        learning_rate=learning_rate,
    )
    dpo_logits, _ = jax.vmap(lambda beta: train(functools.partial(dpo_loss, beta=beta)))(betas)
    ipo_logits, _ = jax.vmap(lambda tau: train(functools.partial(ipo_loss, tau=tau)))(taus)
    return _trajectory_stats(dpo_logits, reference_probs), _trajectory_stats(ipo_logits, reference_probs)


def run_deterministic(config: DeterministicConfig) -> DeterministicResults:
    """Train DPO for every beta and IPO for every tau on the exact population loss."""
    ref = np.asarray(config.reference_probs, dtype=np.float64)
    weights = deterministic_pair_weights(ref)
    dpo, ipo = _train_grid(
        *(jnp.asarray(x, jnp.float32) for x in (ref, weights, config.betas, config.taus, config.learning_rate)),
        steps=config.steps,
        record_every=config.record_every,
    )
    (dpo_policies, dpo_kl, dpo_margins), (ipo_policies, ipo_kl, ipo_margins) = jax.device_get((dpo, ipo))
    optima = np.stack([ipo_optimum(ref, tau, weights) for tau in config.taus])
    optimum_kl = np.sum(optima * np.log(optima / ref), axis=-1)
    return DeterministicResults(
        config=config,
        steps=np.arange(0, config.steps + 1, config.record_every),
        dpo_policies=np.asarray(dpo_policies),
        ipo_policies=np.asarray(ipo_policies),
        dpo_kl=np.asarray(dpo_kl),
        ipo_kl=np.asarray(ipo_kl),
        dpo_margins=np.asarray(dpo_margins),
        ipo_margins=np.asarray(ipo_margins),
        ipo_optima=optima,
        ipo_optimum_kl=optimum_kl,
    )


def _format_probs(p) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in p) + ")"


def format_deterministic_table(results: DeterministicResults) -> str:
    """Markdown table of the final policies, KL to the reference and, for IPO, the closed form."""
    cfg = results.config
    ref = np.asarray(cfg.reference_probs)
    last = len(ref) - 1
    lines = [
        f"π_ref = {_format_probs(ref)} over y0 ≻ … ≻ y{last}; {cfg.steps} Adam steps, "
        f"lr {cfg.learning_rate:g} cosine-decayed to 0. The pure winner δ_y0 has "
        f"KL(δ_y0‖π_ref) = log(1/π_ref(y0)) = {-math.log(ref[0]):.4f}.",
        "",
        f"| method | β / τ | final π | π(y0) | KL(π‖π_ref) | margin h(y0, y{last}) "
        "| closed-form π* | max abs(π − π*) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for beta, policy, kl, margin in zip(cfg.betas, results.dpo_policies, results.dpo_kl, results.dpo_margins):
        lines.append(
            f"| DPO | β = {beta:g} | {_format_probs(policy[-1])} | {policy[-1, 0]:.4f} | {kl[-1]:.4f} "
            f"| {margin[-1]:.2f} | none (diverges) | — |"
        )
    for tau, policy, kl, margin, optimum in zip(
        cfg.taus, results.ipo_policies, results.ipo_kl, results.ipo_margins, results.ipo_optima
    ):
        error = np.max(np.abs(policy[-1] - optimum))
        lines.append(
            f"| IPO | τ = {tau:g} | {_format_probs(policy[-1])} | {policy[-1, 0]:.4f} | {kl[-1]:.4f} "
            f"| {margin[-1]:.2f} | {_format_probs(optimum)} | {error:.1e} |"
        )
    return "\n".join(lines)


def plot_deterministic(results: DeterministicResults, path) -> None:
    """Three panels vs training step: pi(y0), KL(pi || pi_ref), margin h(y0, y_{K-1}); saved as PNG."""
    import matplotlib  # lazily: the computation does not need it
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry
    from matplotlib.lines import Line2D

    cfg = results.config
    ref = np.asarray(cfg.reference_probs)
    last = len(ref) - 1
    values = sorted(set(cfg.betas) | set(cfg.taus))
    colours = dict(zip(values, matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(values)))))
    steps = results.steps[1:]  # log-x axis: step 0 is the reference, drawn as a grey line
    fig = Figure(figsize=(17, 5.5), layout="constrained")
    axes = fig.subplots(1, 3)
    for beta, policy, kl, margin in zip(cfg.betas, results.dpo_policies, results.dpo_kl, results.dpo_margins):
        style = dict(color=colours[beta], linestyle="-", label=f"DPO β={beta:g}")
        for ax, series in zip(axes, (policy[1:, 0], kl[1:], margin[1:])):
            ax.plot(steps, series, **style)
    for tau, policy, kl, margin, optimum, optimum_kl in zip(
        cfg.taus, results.ipo_policies, results.ipo_kl, results.ipo_margins, results.ipo_optima, results.ipo_optimum_kl
    ):
        style = dict(color=colours[tau], linestyle="--", label=f"IPO τ={tau:g}")
        for ax, series in zip(axes, (policy[1:, 0], kl[1:], margin[1:])):
            ax.plot(steps, series, **style)
        axes[0].axhline(optimum[0], color=colours[tau], linestyle=":", linewidth=1)
        axes[1].axhline(optimum_kl, color=colours[tau], linestyle=":", linewidth=1)
        optimum_ratio = np.log(optimum / ref)
        axes[2].axhline(optimum_ratio[0] - optimum_ratio[-1], color=colours[tau], linestyle=":", linewidth=1)
    axes[0].axhline(ref[0], color="grey", linewidth=1, label="π_ref(y0)")
    winner_kl = -math.log(ref[0])
    axes[1].axhline(winner_kl, color="black", linestyle="-.", linewidth=1, label="KL(δ_y0‖π_ref), pure winner")
    axes[2].set_yscale("log")
    titles = (
        "π(y0), the always-winning response",
        "KL(π‖π_ref)",
        f"log-ratio margin h(y0, y{last}) = r(y0) − r(y{last})",
    )
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("Adam step")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [axes[1].get_lines()[-1], Line2D([], [], color="black", linestyle=":", linewidth=1)]
    labels += [handles[-2].get_label(), "IPO closed-form optimum"]
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels) // 2 + 1, fontsize=9)
    fig.suptitle(
        f"Deterministic preferences y0 ≻ … ≻ y{last}, π_ref = {_format_probs(ref)}: DPO (solid) heads to y0 for "
        "every β; IPO (dashed) stops at its closed-form optimum (dotted), set by τ"
    )
    fig.savefig(pathlib.Path(path), dpi=120)
