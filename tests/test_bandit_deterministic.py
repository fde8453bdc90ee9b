"""Deterministic-preference bandit: IPO's closed form, DPO's divergence, the vmapped grid, config."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.preference_bandits.common import minimize_logits, minimize_logits_recorded
from experiments.preference_bandits.deterministic import (
    DeterministicConfig,
    deterministic_pair_weights,
    format_deterministic_table,
    ipo_optimum,
    plot_deterministic,
    population_loss,
    run_deterministic,
    train_policy,
)
from jaxrl_si.losses import dpo_loss, ipo_loss

REF = (0.2, 0.3, 0.5)
# Win rates against the reference, P(y_k ≻ pi_ref) = sum_j ref_j P(y_k ≻ y_j), a tie counting 1/2:
#   y0: 0.2 * 0.5 + 0.3 + 0.5 = 0.90;  y1: 0.3 * 0.5 + 0.5 = 0.65;  y2: 0.5 * 0.5 = 0.25.
WIN_RATE_VS_REF = np.array([0.90, 0.65, 0.25])


@pytest.fixture(scope="module")
def results():
    """The default experiment (20k steps, 4 betas and 4 taus; about a second on a CPU)."""
    return run_deterministic(DeterministicConfig())


def _record_index(results, step):
    return int(np.flatnonzero(results.steps == step)[0])


class TestPairWeights:
    def test_golden(self):
        # W_ij = 2 ref_i ref_j / (1 - sum ref^2); 1 - (0.04 + 0.09 + 0.25) = 0.62:
        #   W01 = 0.12 / 0.62, W02 = 0.20 / 0.62, W12 = 0.30 / 0.62; nothing below the diagonal.
        expected = np.array([[0, 0.12, 0.20], [0, 0, 0.30], [0, 0, 0]]) / 0.62
        np.testing.assert_allclose(deterministic_pair_weights(REF), expected, rtol=1e-12)


class TestIPOClosedForm:
    def test_golden_tau_one(self):
        # Paper's optimum pi* ∝ ref exp(P(y ≻ ref) / tau); tau = 1:
        #   0.2 e^0.90 = 0.491921, 0.3 e^0.65 = 0.574662, 0.5 e^0.25 = 0.642013; sum 1.708596
        #   -> pi* = (0.287909, 0.336336, 0.375755)
        optimum = ipo_optimum(REF, 1.0, deterministic_pair_weights(REF))
        np.testing.assert_allclose(optimum, [0.287909, 0.336336, 0.375755], atol=2e-6)

    @pytest.mark.parametrize("tau", [0.05, 0.3, 2.0])
    def test_equals_tilted_reference(self, tau):
        tilted = np.array(REF) * np.exp(WIN_RATE_VS_REF / tau)
        optimum = ipo_optimum(REF, tau, deterministic_pair_weights(REF))
        np.testing.assert_allclose(optimum, tilted / tilted.sum(), rtol=1e-10)

    def test_satisfies_normal_equations_for_any_pair_weights(self):
        # Random positive weights on a random 5-response dataset: every response's residuals balance,
        # sum_j W_kj (d_k - d_j - c) = sum_i W_ik (d_i - d_k - c), with d = log pi* - log ref.
        rng = np.random.default_rng(0)
        ref = rng.dirichlet(np.ones(5))
        weights = np.triu(rng.uniform(0.1, 1.0, (5, 5)), k=1)
        tau = 0.4
        d = np.log(ipo_optimum(ref, tau, weights)) - np.log(ref)
        residual = d[:, None] - d[None, :] - 1.0 / (2 * tau)
        balance = (weights * residual).sum(axis=1) - (weights * residual).sum(axis=0)
        np.testing.assert_allclose(balance, 0.0, atol=1e-10)

    def test_is_a_stationary_point_of_the_library_loss(self):
        weights = deterministic_pair_weights(REF)
        optimum = ipo_optimum(REF, 0.5, weights)
        grad = jax.grad(population_loss)(
            jnp.log(jnp.asarray(optimum, jnp.float32)),
            functools.partial(ipo_loss, tau=0.5),
            jnp.asarray(REF),
            jnp.asarray(weights, jnp.float32),
        )
        np.testing.assert_allclose(grad, 0.0, atol=1e-5)

    def test_large_tau_returns_the_reference(self):
        np.testing.assert_allclose(ipo_optimum(REF, 1e6, deterministic_pair_weights(REF)), REF, atol=1e-6)


class TestExperiment:
    def test_ipo_reaches_its_closed_form(self, results):
        errors = np.abs(results.ipo_policies[:, -1] - results.ipo_optima).max(axis=-1)
        np.testing.assert_array_less(errors, 1e-4)

    def test_ipo_kl_decreases_with_tau(self, results):
        order = np.argsort(results.config.taus)
        assert np.all(np.diff(results.ipo_kl[order, -1]) < 0)
        assert np.all(np.diff(results.ipo_optimum_kl[order]) < 0)

    def test_dpo_goes_to_the_winner_for_every_beta(self, results):
        winner = results.dpo_policies[:, -1, 0]
        assert np.all(winner > 0.95), winner
        assert winner.min() > results.ipo_policies[:, -1, 0].max()
        assert results.dpo_kl[:, -1].min() > results.ipo_kl[:, -1].max()
        # KL(pi || ref) is bounded by that of the pure winner, log(1 / ref(y0)) = log 5.
        assert np.all(results.dpo_kl <= math.log(5) + 1e-5)

    def test_dpo_has_no_finite_optimum(self, results):
        # The log-ratio margin keeps growing for every beta (KL(pi||ref) saturates at log 5 in
        # float32, so it is checked early, before that).
        early, late = _record_index(results, 50), _record_index(results, 100)
        assert np.all(results.dpo_kl[:, late] > results.dpo_kl[:, early])
        early, late = _record_index(results, 5000), _record_index(results, 10000)
        assert np.all(results.dpo_margins[:, late] > results.dpo_margins[:, early] + 1.0)
        # IPO's margin has stopped at its closed-form value from step 5000 on (up to Adam's
        # bounded bursts, <= 0.015 here, which the decaying step size removes by the end).
        closed = np.log(results.ipo_optima / np.array(REF))
        deviation = np.abs(results.ipo_margins[:, early:] - (closed[:, 0] - closed[:, -1])[:, None])
        assert deviation.max() < 0.05
        np.testing.assert_array_less(deviation[:, -1], 1e-4)

    def test_grid_member_equals_a_single_call(self):
        config = DeterministicConfig(betas=(0.1, 1.0), taus=(0.5, 2.0), steps=200, record_every=50)
        grid = run_deterministic(config)
        weights = jnp.asarray(deterministic_pair_weights(REF), jnp.float32)
        for loss_fn, policies in (
            (functools.partial(dpo_loss, beta=1.0), grid.dpo_policies[1]),
            (functools.partial(ipo_loss, tau=0.5), grid.ipo_policies[0]),
        ):
            logits, _ = train_policy(
                loss_fn, jnp.asarray(REF), weights, steps=200, record_every=50, learning_rate=config.learning_rate
            )
            np.testing.assert_allclose(jax.nn.softmax(logits), policies, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(grid.steps, [0, 50, 100, 150, 200])
        np.testing.assert_allclose(grid.dpo_policies[:, 0], np.broadcast_to(REF, (2, 3)), rtol=1e-6)


class TestMinimizeLogitsRecorded:
    def test_matches_minimize_logits(self):
        def loss_fn(logits):
            return jnp.sum(jnp.square(logits - jnp.array([1.0, -2.0, 0.5])))

        init = jnp.zeros(3)
        final, losses = minimize_logits(loss_fn, init, steps=30, learning_rate=0.1)
        trajectory, recorded_losses = minimize_logits_recorded(
            loss_fn, init, steps=30, record_every=10, learning_rate=0.1
        )
        assert trajectory.shape == (4, 3)
        np.testing.assert_array_equal(trajectory[0], init)
        np.testing.assert_allclose(trajectory[-1], final, rtol=1e-6)
        np.testing.assert_allclose(recorded_losses, losses, rtol=1e-6)

    def test_record_every_must_divide_steps(self):
        with pytest.raises(ValueError, match="record_every"):
            minimize_logits_recorded(jnp.sum, jnp.zeros(2), steps=10, record_every=3, learning_rate=0.1)


class TestConfig:
    @pytest.mark.parametrize(
        "field, value",
        [
            ("reference_probs", (0.5, 0.6)),
            ("reference_probs", (0.0, 1.0)),
            ("reference_probs", (1.0,)),
            ("betas", ()),
            ("betas", (0.1, -1.0)),
            ("taus", (0.0,)),
            ("taus", (float("inf"),)),
            ("steps", 0),
            ("learning_rate", 0.0),
            ("record_every", 3),
        ],
    )
    def test_bad_value_names_the_field(self, field, value):
        with pytest.raises(ValueError, match=f"`{field}`"):
            dataclasses.replace(DeterministicConfig(steps=10, record_every=5), **{field: value})


def test_table_and_plot_smoke(results, tmp_path):
    table = format_deterministic_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| DPO") or line.startswith("| IPO")]
    assert len(rows) == len(results.config.betas) + len(results.config.taus)
    assert "closed-form π*" in table
    path = tmp_path / "deterministic.png"
    plot_deterministic(results, path)
    assert path.stat().st_size > 10_000
