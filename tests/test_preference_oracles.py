"""Preference oracles: calibration, skew-symmetry, a Condorcet cycle, non-Markovian ranking, bad input."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import preferences
from jaxrl_si._checks import ArgumentValueError
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences import Trajectories
from jaxrl_si.preferences.tasks import PENDULUM


def _trajectories(key, n, length=5, k=3):
    key_r, key_f = jax.random.split(key)
    features = jax.random.uniform(key_f, (n, length, k), minval=0.0, maxval=3.0)
    weights = jnp.asarray(PENDULUM.true_weights)[:k]
    reward = features @ weights + 0.01 * jax.random.normal(key_r, (n, length))
    return Trajectories(reward, features)


@pytest.mark.parametrize("name", sorted(PENDULUM.oracles))
def test_every_oracle_is_skew_symmetric_and_a_probability(name):
    oracle = PENDULUM.oracle(name)
    a, b = _trajectories(jax.random.key(0), 64), _trajectories(jax.random.key(1), 64)
    forward = preferences.preference_probability(oracle, a, b)
    backward = preferences.preference_probability(oracle, b, a)
    assert forward.shape == (64,)
    assert bool(jnp.all((forward >= 0) & (forward <= 1)))
    np.testing.assert_allclose(forward + backward, 1.0, atol=1e-6)
    matrix = preferences.preference_matrix(oracle, a)
    np.testing.assert_allclose(matrix + matrix.T, 1.0, atol=1e-6)


def test_bradley_terry_labels_are_calibrated():
    """Label frequency over many draws matches σ((R_a − R_b) / T) within 4 standard errors."""
    oracle = preferences.BradleyTerry(temperature=20.0)
    margins = jnp.array([-40.0, -10.0, 0.0, 15.0, 30.0])
    draws = 20_000
    a = Trajectories(jnp.broadcast_to(margins[:, None], (5, 1)), jnp.zeros((5, 1, 1)))
    b = Trajectories(jnp.zeros((5, 1)), jnp.zeros((5, 1, 1)))
    sample = jax.vmap(lambda key: preferences.sample_preferences(oracle, key, a, b))
    frequency = np.asarray(sample(jax.random.split(jax.random.key(0), draws)).mean(0))
    expected = 1.0 / (1.0 + np.exp(-np.asarray(margins) / 20.0))
    stderr = np.sqrt(expected * (1 - expected) / draws)
    np.testing.assert_array_less(np.abs(frequency - expected), 4 * stderr + 1e-9)


def test_thurstone_is_probit_and_flip_keeps_its_rate():
    a = Trajectories(jnp.array([[30.0]]), jnp.zeros((1, 1, 1)))
    b = Trajectories(jnp.array([[0.0]]), jnp.zeros((1, 1, 1)))
    thurstone = preferences.preference_probability(preferences.Thurstone(noise_std=20.0), a, b)
    np.testing.assert_allclose(thurstone, jax.scipy.stats.norm.cdf(30.0 / (20.0 * np.sqrt(2.0))), rtol=1e-6)
    flip = preferences.preference_probability(preferences.LabelFlip(flip_rate=0.2), a, b)
    np.testing.assert_allclose(flip, 0.8)
    assert float(preferences.preference_probability(preferences.HardLabels(), a, a)[0]) == 0.5


def test_sampled_matrix_answers_each_pair_once():
    """L[j, i] = 1 − L[i, j], entries 0/1 off the diagonal: one query per unordered pair."""
    labels = preferences.sample_preference_matrix(PENDULUM.oracle("bt"), jax.random.key(3), _trajectories(jax.random.key(2), 7))
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_array_equal(np.asarray(labels + labels.T)[off], 1.0)
    assert set(np.unique(np.asarray(labels)[off])) <= {0.0, 1.0}


def test_majority_vote_has_a_condorcet_cycle():
    """Among random trajectories, the three annotators' majority cycles: i ≻ j ≻ k ≻ i."""
    trajectories = _trajectories(jax.random.key(0), 40, length=10)
    p = np.asarray(preferences.preference_matrix(PENDULUM.oracle("majority"), trajectories))
    cycles = [(i, j, k) for i, j, k in itertools.permutations(range(40), 3) if p[i, j] == p[j, k] == p[k, i] == 1.0]
    assert cycles, "no Condorcet cycle among 40 random trajectories"
    i, j, k = cycles[0]
    # each annotator alone is transitive: the cycle comes from the vote
    for weights in PENDULUM.oracle("majority").weights:
        utility = np.asarray(trajectories.feature_sums) @ np.asarray(weights)
        assert not (utility[i] > utility[j] > utility[k] > utility[i])


def test_constrained_oracle_ranks_feasibility_before_return():
    """Speed limit 6 rad/s: a slow low-return trajectory beats a fast high-return one; the
    violators among themselves (one with one violation, one with many) are compared by return."""
    oracle = PENDULUM.oracle("constrained")
    speed_sq = jnp.array([[1.0, 4.0, 9.0], [1.0, 49.0, 1.0], [49.0, 49.0, 49.0]])  # max 9 | one 49 | all 49
    features = jnp.stack([jnp.zeros_like(speed_sq), speed_sq, jnp.zeros_like(speed_sq)], axis=-1)
    trajectories = Trajectories(jnp.array([[-300.0, 0, 0], [-100.0, 0, 0], [-50.0, 0, 0]]), features)
    p = np.asarray(preferences.preference_matrix(oracle, trajectories))
    assert p[0, 1] == 1.0 and p[0, 2] == 1.0  # feasible beats both violators despite its return
    np.testing.assert_allclose(p[2, 1], 1 / (1 + np.exp(-50 / 20.0)), rtol=1e-6)  # more violations, higher return: wins


def test_mixture_is_the_average_of_its_annotators():
    oracle = PENDULUM.oracle("mixture")
    a, b = _trajectories(jax.random.key(4), 16), _trajectories(jax.random.key(5), 16)
    single = [
        preferences.preference_probability(preferences.AnnotatorMixture((w,), (1.0,), temperature=20.0), a, b) for w in oracle.weights
    ]
    np.testing.assert_allclose(preferences.preference_probability(oracle, a, b), np.mean(single, axis=0), rtol=1e-5)


def test_oracles_jit_and_vmap():
    trajectories = _trajectories(jax.random.key(6), 2 * 6)
    batched = jax.tree.map(lambda x: x.reshape(2, 6, *x.shape[1:]), trajectories)
    fn = jax.jit(jax.vmap(lambda key, t: preferences.sample_preference_matrix(PENDULUM.oracle("thurstone"), key, t)))
    assert fn(jax.random.split(jax.random.key(0), 2), batched).shape == (2, 6, 6)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: preferences.BradleyTerry(temperature=0.0), "BradleyTerry.temperature"),
        (lambda: preferences.AnnotatorMixture(((1.0,),), (1.0,), temperature=-1.0), "AnnotatorMixture.temperature"),
        (lambda: preferences.Thurstone(noise_std=0.0), "Thurstone.noise_std"),
        (lambda: preferences.LabelFlip(flip_rate=0.6), "LabelFlip.flip_rate"),
        (lambda: preferences.LabelFlip(flip_rate=-0.1), "LabelFlip.flip_rate"),
        (lambda: preferences.MajorityVote(((1.0,), (2.0,))), "odd number"),
        (lambda: preferences.AnnotatorMixture(((1.0,), (2.0,)), (1.0,)), "AnnotatorMixture.probabilities"),
    ],
)
def test_bad_oracle_settings_name_the_argument(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_mismatched_trajectories_name_the_argument():
    a = _trajectories(jax.random.key(0), 4, length=5)
    with pytest.raises(ArgumentValueError, match="`b`"):
        preferences.preference_probability(preferences.BradleyTerry(), a, _trajectories(jax.random.key(1), 4, length=6))
    with pytest.raises(ArgumentValueError, match="a.features"):
        preferences.preference_probability(preferences.BradleyTerry(), a.replace(features=a.features[..., 0]), a)
    with pytest.raises(ArgumentValueError, match="weighs 3 features"):
        preferences.preference_probability(PENDULUM.oracle("majority"), *[_trajectories(jax.random.key(2), 4, k=2)] * 2)
    with pytest.raises(ConfigError, match="unknown oracle 'nope'"):
        PENDULUM.oracle("nope")
