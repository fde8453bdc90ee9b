"""Self-play win rates and tabular preference games."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.preferences import (
    bradley_terry_matrix,
    cyclic_preference_matrix,
    duality_gap,
    minimax_winner,
    win_probabilities,
    win_rates,
)


def test_win_rates_golden():
    # Row 0 wins both comparisons: (1 + 1) / 2 = 1; row 1: (0 + 0.5) / 2 = 0.25; row 2 likewise.
    p = jnp.array([[0.5, 1.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(win_rates(p), [1.0, 0.25, 0.25])


def test_win_rates_ignore_the_diagonal():
    p = jnp.array([[0.5, 0.8], [0.2, 0.5]])
    changed_diagonal = p.at[0, 0].set(1.0).at[1, 1].set(0.0)
    np.testing.assert_allclose(win_rates(p), win_rates(changed_diagonal))
    np.testing.assert_allclose(win_rates(p), [0.8, 0.2])


def test_win_rates_of_a_skew_symmetric_matrix_average_one_half():
    logits = jax.random.normal(jax.random.key(0), (6,))
    p = bradley_terry_matrix(logits)
    np.testing.assert_allclose(win_rates(p).mean(), 0.5, rtol=1e-6)


def test_win_rates_batch_and_vmap():
    p = jax.random.uniform(jax.random.key(1), (4, 5, 5))
    np.testing.assert_allclose(win_rates(p), jax.vmap(win_rates)(p), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(win_rates)(p), win_rates(p), rtol=1e-6)


@pytest.mark.parametrize(
    "matrix, match",
    [
        (jnp.zeros((3, 4)), "square"),
        (jnp.zeros((1, 1)), "N >= 2"),
        (jnp.zeros(3), "rank"),
        (jnp.full((2, 2), 1.5), "preference_matrix"),
        (jnp.zeros((2, 2), jnp.int32), "floating"),
    ],
)
def test_win_rates_errors(matrix, match):
    with pytest.raises((ValueError, TypeError), match=match):
        win_rates(matrix)


def test_cyclic_matrix_nash_is_the_lp_solution_and_has_zero_gap():
    p, nash = cyclic_preference_matrix(0.4, 0.1, 0.2)
    # A x = 0 with A = P - 1/2: x = (c, b, a) / (a + b + c) = (2, 1, 4) / 7
    np.testing.assert_allclose(nash, np.array([2, 1, 4]) / 7, rtol=1e-6)
    np.testing.assert_allclose(p + p.T, np.ones((3, 3)), rtol=1e-6)
    np.testing.assert_allclose(minimax_winner(p), nash, atol=1e-6)
    np.testing.assert_allclose(duality_gap(jnp.asarray(p), jnp.asarray(nash)), 0.0, atol=1e-6)
    # Every response wins exactly half the time against the equilibrium.
    np.testing.assert_allclose(win_probabilities(jnp.asarray(p), jnp.asarray(nash)), np.full(3, 0.5), atol=1e-6)


def test_duality_gap_of_pure_policies():
    p, _ = cyclic_preference_matrix(0.4, 0.1, 0.2)
    # Playing response 0 always: the best response is 2, which beats 0 with 1/2 + b = 0.6.
    np.testing.assert_allclose(duality_gap(jnp.asarray(p), jnp.array([1.0, 0.0, 0.0])), 0.1, rtol=1e-6)


def test_transitive_winner():
    p = np.asarray(bradley_terry_matrix(jnp.array([0.0, 2.0, -1.0])))
    np.testing.assert_allclose(minimax_winner(p), [0.0, 1.0, 0.0], atol=1e-6)


def test_cyclic_matrix_rejects_out_of_range():
    with pytest.raises(ValueError, match="`a`"):
        cyclic_preference_matrix(0.6, 0.1, 0.1)
