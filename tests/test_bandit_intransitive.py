"""Self-play on intransitive preferences: oracle, update conventions, vmapped seeds, control game."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.preference_bandits import intransitive as it
from jaxrl_si.preferences import cyclic_preference_matrix

TINY = it.IntransitiveConfig(iterations=12, groups=8, group_size=3, inner_steps=20, seeds=2)


@pytest.fixture(scope="module")
def tiny_results():
    return it.run_intransitive(TINY)


def test_tournament_is_skew_symmetric_with_bernoulli_means():
    p, _ = cyclic_preference_matrix(0.4, 0.1, 0.2)
    responses = jnp.tile(jnp.array([0, 1, 2]), (20_000, 1))
    outcomes = it.tournament(jax.random.key(0), jnp.asarray(p), responses)
    np.testing.assert_array_equal(outcomes + jnp.swapaxes(outcomes, 1, 2), np.ones((20_000, 3, 3)))
    np.testing.assert_allclose(np.diagonal(outcomes, axis1=1, axis2=2), 0.5)
    # y0 vs y1 won with P = 0.9, y1 vs y2 with 0.7, y0 vs y2 with 0.4; 20k draws: std < 0.004
    np.testing.assert_allclose(outcomes[:, 0, 1].mean(), 0.9, atol=0.015)
    np.testing.assert_allclose(outcomes[:, 1, 2].mean(), 0.7, atol=0.015)
    np.testing.assert_allclose(outcomes[:, 0, 2].mean(), 0.4, atol=0.015)


def test_sppo_update_is_multiplicative_weights():
    # Exact (soft) outcomes on a group holding every response once, from the uniform policy:
    # P_hat(y_i) = mean_j P[i, j] = P(y_i ≻ uniform); Eq. 3.2 gives pi ∝ exp(eta (P_hat - 1/2)).
    p, _ = cyclic_preference_matrix(0.4, 0.1, 0.2)
    responses = jnp.array([[0, 1, 2]])
    config = dataclasses.replace(TINY, inner_steps=2000, inner_learning_rate=0.02, sppo_eta=1.0)
    logits = it.sppo_update(config, jnp.zeros(3), responses, jnp.asarray(p)[None], None)
    expected = jax.nn.softmax(config.sppo_eta * (p.mean(axis=1) - 0.5))
    np.testing.assert_allclose(jax.nn.softmax(logits), expected, atol=5e-3)


def test_regularized_equilibrium_is_a_fixed_point_of_inpo_closed_form():
    p, nash = cyclic_preference_matrix(0.4, 0.1, 0.2)
    tau = 0.03
    pi = it.regularized_equilibrium(p, tau=tau)
    # Fixed point of pi ∝ exp(P pi / eta) ref^(tau/eta) pi^(1 - tau/eta)  <=>  pi ∝ exp(P pi / tau) (uniform ref)
    target = np.exp(p @ pi / tau)
    np.testing.assert_allclose(pi, target / target.sum(), atol=1e-6)
    assert 0.5 * np.abs(pi - nash).sum() < 0.1  # small tau: close to Nash


def test_vmapped_seeds_equal_single_seed_runs():
    matrices, _ = (jnp.asarray(x) for x in TINY.games())
    keys = jax.random.split(jax.random.key(0), TINY.seeds)
    batched = it._run_method(TINY, "sppo", matrices, keys)
    single = it._run_method(dataclasses.replace(TINY, seeds=1), "sppo", matrices, keys[1:])
    np.testing.assert_allclose(batched[:, 1], single[:, 0], rtol=1e-5, atol=1e-6)


def test_shapes_and_finite_metrics(tiny_results):
    shape = (2, TINY.seeds, TINY.iterations + 1)
    for method in it.METHODS:
        assert tiny_results.policies[method].shape == shape + (3,)
        for metric in (tiny_results.gap_last, tiny_results.gap_average, tiny_results.tv_last, tiny_results.tv_average):
            assert metric[method].shape == shape and np.isfinite(metric[method]).all()
        assert (tiny_results.gap_last[method] >= -1e-6).all()  # skew-symmetric game: gap >= 0


def test_transitive_control_finds_the_winner(tiny_results):
    for method in it.METHODS:
        assert tiny_results.policies[method][1, :, -1, 0].mean() > 0.6, method  # from pi_0(y0) = 0.1


def test_table_and_plots(tiny_results, tmp_path):
    table = it.format_intransitive_table(tiny_results)
    assert table.count("| SPPO |") == 3 and "Transitive control" in table
    for path in it.plot_intransitive(tiny_results, tmp_path):
        assert path.stat().st_size > 10_000


@pytest.mark.parametrize(
    "field, value",
    [("group_size", 1), ("iterations", 0), ("cycle", (0.6, 0.1, 0.1)), ("initial_policy", (0.5, 0.5, 0.5)), ("inpo_tau", 2.0), ("sppo_eta", 0.0)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        it.IntransitiveConfig(**{field: value})
