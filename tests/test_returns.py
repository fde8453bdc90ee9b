"""GAE and TD(lambda) returns: hand-derived golden values, limits, jit/vmap/grad, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.losses.returns import gae_advantages, lambda_returns

# A 3-step rollout of one env, gamma = 0.9, lambda = 0.5 (gamma * lambda = 0.45):
#   t=0: ordinary step.                      r=1, V(s_0)=0.5, V(s_1)=1.0
#   t=1: truncated (time limit), done only.  r=2, V(s_1)=1.0, V(final obs)=4.0  -> bootstraps
#   t=2: new episode, terminated.            r=3, V(s_2)=1.5, V(s_3)=2.0 ignored -> no bootstrap
REWARDS = jnp.array([1.0, 2.0, 3.0])
VALUES = jnp.array([0.5, 1.0, 1.5])
NEXT_VALUES = jnp.array([1.0, 4.0, 2.0])
TERMINATED = jnp.array([False, False, True])
DONE = jnp.array([False, True, True])
GAMMA, LAMBDA = 0.9, 0.5
# delta_2 = 3 + 0.9 * 0 * 2.0 - 1.5           = 1.5    A_2 = 1.5
# delta_1 = 2 + 0.9 * 4.0 - 1.0 = 2 + 3.6 - 1 = 4.6    A_1 = 4.6 + 0.45 * 0 * A_2 = 4.6
# delta_0 = 1 + 0.9 * 1.0 - 0.5               = 1.4    A_0 = 1.4 + 0.45 * 4.6 = 1.4 + 2.07 = 3.47
GOLDEN_ADV = [3.47, 4.6, 1.5]
# returns = A + V = [3.47 + 0.5, 4.6 + 1.0, 1.5 + 1.5]
GOLDEN_RET = [3.97, 5.6, 3.0]


def _gae(**kw):
    return gae_advantages(REWARDS, VALUES, NEXT_VALUES, TERMINATED, DONE, **kw)


def _reference_gae(r, v, nv, term, done, gamma, lam):
    """Independent Python loop over the two-flag GAE definition."""
    adv, next_adv = np.zeros_like(r), np.zeros_like(r[0])
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * (1 - term[t]) * nv[t] - v[t]
        next_adv = delta + gamma * lam * (1 - np.maximum(done[t], term[t])) * next_adv
        adv[t] = next_adv
    return adv


def _random_rollout(t=6, b=3):
    k = jax.random.split(jax.random.key(0), 4)
    r, v, nv = (jax.random.normal(key, (t, b)) for key in k[:3])
    term = jax.random.bernoulli(k[3], 0.2, (t, b))
    trunc = jax.random.bernoulli(jax.random.fold_in(k[3], 1), 0.2, (t, b))
    return r, v, nv, term, term | trunc


class TestGAE:
    def test_golden_with_truncation_and_termination(self):
        adv, ret = _gae(gamma=GAMMA, lambda_=LAMBDA)
        np.testing.assert_allclose(adv, GOLDEN_ADV, rtol=1e-6)
        np.testing.assert_allclose(ret, GOLDEN_RET, rtol=1e-6)

    def test_float_flags_equal_bool_flags(self):
        adv, _ = gae_advantages(
            REWARDS, VALUES, NEXT_VALUES, TERMINATED.astype(jnp.float32), DONE.astype(jnp.float32),
            gamma=GAMMA, lambda_=LAMBDA,
        )
        np.testing.assert_allclose(adv, GOLDEN_ADV, rtol=1e-6)

    def test_terminated_without_done_is_still_a_boundary(self):
        # Mark step 1 as terminated only: A_1 = 2 - 1 = 1 (no bootstrap), A_0 = 1.4 + 0.45 * 1 = 1.85
        term = jnp.array([False, True, False])
        adv, _ = gae_advantages(REWARDS, VALUES, NEXT_VALUES, term, jnp.zeros(3, bool), gamma=GAMMA, lambda_=LAMBDA)
        np.testing.assert_allclose(adv[:2], [1.85, 1.0], rtol=1e-6)

    def test_lambda_zero_is_td_error(self):
        # A_t = delta_t = [1.4, 4.6, 1.5]
        adv, _ = _gae(gamma=GAMMA, lambda_=0.0)
        np.testing.assert_allclose(adv, [1.4, 4.6, 1.5], rtol=1e-6)

    def test_lambda_one_is_bootstrapped_monte_carlo(self):
        # no boundaries and next_values[t] = values[t + 1], so the TD errors telescope:
        # A_0 = 1 + 0.9 * 2 + 0.81 * 3 + 0.729 * V(s_3)=2.0 - V(s_0)=0.5
        #     = 1 + 1.8 + 2.43 + 1.458 - 0.5 = 6.188
        flags = jnp.zeros(3, bool)
        next_values = jnp.array([1.0, 1.5, 2.0])
        adv, _ = gae_advantages(REWARDS, VALUES, next_values, flags, flags, gamma=GAMMA, lambda_=1.0)
        np.testing.assert_allclose(adv[0], 6.188, rtol=1e-6)

    def test_matches_python_loop_reference_on_batch(self):
        r, v, nv, term, done = _random_rollout()
        adv, ret = gae_advantages(r, v, nv, term, done, gamma=0.97, lambda_=0.8)
        expected = _reference_gae(*(np.asarray(x, np.float64) for x in (r, v, nv, term, done)), 0.97, 0.8)
        np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ret, adv + v, rtol=1e-6)

    def test_jit_and_vmap_over_batch_equal_plain_call(self):
        r, v, nv, term, done = _random_rollout()
        plain = gae_advantages(r, v, nv, term, done, gamma=0.97, lambda_=0.8)
        jitted = jax.jit(gae_advantages)(r, v, nv, term, done, gamma=0.97, lambda_=0.8)
        per_env = jax.vmap(lambda *a: gae_advantages(*a, gamma=0.97, lambda_=0.8), in_axes=1, out_axes=1)(
            r, v, nv, term, done
        )
        for a, b in ((plain, jitted), (plain, per_env)):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
            np.testing.assert_allclose(a[1], b[1], rtol=1e-6)

    def test_vmap_over_gamma_equals_per_value_calls_and_traces_once(self):
        traces = []

        def advantages(gamma):
            traces.append(1)
            return _gae(gamma=gamma, lambda_=LAMBDA)[0]

        gammas = jnp.array([0.0, 0.5, 0.9])
        swept = jax.jit(jax.vmap(advantages))(gammas)
        for i, g in enumerate([0.0, 0.5, 0.9]):
            np.testing.assert_allclose(swept[i], _gae(gamma=g, lambda_=LAMBDA)[0], rtol=1e-6)
        jitted = jax.jit(advantages)
        jitted(jnp.float32(0.5)), jitted(jnp.float32(0.9))
        assert len(traces) == 2  # once for the vmapped sweep, once for both jitted values

    def test_grad_wrt_gamma_and_values(self):
        # dA_0/dgamma at lambda = 0.5: A_0 = 1 + g * 1.0 - 0.5 + g * 0.5 * (2 + g * 4 - 1)
        #   d/dg = 1.0 + 0.5 * (2 + 2 * g * 4 - 1) = 1 + 0.5 * (1 + 7.2) = 5.1 at g = 0.9
        grad_gamma = jax.grad(lambda g: _gae(gamma=g, lambda_=LAMBDA)[0][0])(0.9)
        np.testing.assert_allclose(grad_gamma, 5.1, rtol=1e-5)
        # dA_0/dV(s_t): -1 for t = 0, -gamma * lambda = -0.45 for t = 1, 0 after the boundary
        def first_advantage(v):
            return gae_advantages(REWARDS, v, NEXT_VALUES, TERMINATED, DONE, gamma=GAMMA, lambda_=LAMBDA)[0][0]

        grad_v = jax.grad(first_advantage)(VALUES)
        np.testing.assert_allclose(grad_v, [-1.0, -0.45, 0.0], rtol=1e-6, atol=1e-7)


class TestLambdaReturns:
    def test_golden_equals_gae_returns(self):
        # G_2 = 3 (terminated); G_1 = 2 + 0.9 * 4.0 = 5.6 (truncated: full bootstrap);
        # G_0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 5.6) = 1 + 0.9 * 3.3 = 3.97
        out = lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE, gamma=GAMMA, lambda_=LAMBDA)
        np.testing.assert_allclose(out, GOLDEN_RET, rtol=1e-6)

    def test_equals_gae_returns_when_values_are_consistent(self):
        r, v, nv, term, done = _random_rollout()
        # inside an episode, V(s_{t+1}) stored as next_values[t] is values[t + 1]
        nv = jnp.where(done, nv, jnp.concatenate([v[1:], nv[-1:]]))
        _, ret = gae_advantages(r, v, nv, term, done, gamma=0.97, lambda_=0.8)
        out = lambda_returns(r, nv, term, done, gamma=0.97, lambda_=0.8)
        np.testing.assert_allclose(out, ret, rtol=1e-5, atol=1e-6)

    def test_rollout_end_bootstraps_from_last_next_value(self):
        # no flags, lambda = 1: G_2 = 3 + 0.9 * 2.0 = 4.8 (rollout cut, not an episode end);
        # G_1 = 2 + 0.9 * 4.8 = 6.32; G_0 = 1 + 0.9 * 6.32 = 6.688
        flags = jnp.zeros(3, bool)
        out = lambda_returns(REWARDS, NEXT_VALUES, flags, flags, gamma=GAMMA, lambda_=1.0)
        np.testing.assert_allclose(out, [6.688, 6.32, 4.8], rtol=1e-6)

    def test_lambda_zero_is_one_step_target(self):
        out = lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE, gamma=GAMMA, lambda_=0.0)
        np.testing.assert_allclose(out, [1.9, 5.6, 3.0], rtol=1e-6)  # r + 0.9 * V' * (1 - term)

    def test_jit_and_vmap_over_lambda(self):
        lams = jnp.array([0.0, 0.5, 1.0])
        def returns(lam):
            return lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE, gamma=GAMMA, lambda_=lam)

        swept = jax.jit(jax.vmap(returns))(lams)
        for i, lam in enumerate([0.0, 0.5, 1.0]):
            expected = lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE, gamma=GAMMA, lambda_=lam)
            np.testing.assert_allclose(swept[i], expected, rtol=1e-6)


class TestErrors:
    def test_mismatched_shapes_name_the_argument(self):
        with pytest.raises(ValueError, match="`next_values`"):
            gae_advantages(REWARDS, VALUES, NEXT_VALUES[:2], TERMINATED, DONE, gamma=0.9, lambda_=0.5)
        with pytest.raises(ValueError, match="`done`"):
            lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE[:2], gamma=0.9, lambda_=0.5)

    def test_int_dtypes_name_the_argument(self):
        with pytest.raises(TypeError, match="`rewards`"):
            gae_advantages(jnp.arange(3), VALUES, NEXT_VALUES, TERMINATED, DONE, gamma=0.9, lambda_=0.5)
        with pytest.raises(TypeError, match="`terminated`"):
            gae_advantages(REWARDS, VALUES, NEXT_VALUES, TERMINATED.astype(int), DONE, gamma=0.9, lambda_=0.5)

    def test_hyperparameter_range_and_rank(self):
        with pytest.raises(ValueError, match="`gamma`"):
            _gae(gamma=1.5, lambda_=0.5)
        with pytest.raises(ValueError, match="`lambda_`"):
            lambda_returns(REWARDS, NEXT_VALUES, TERMINATED, DONE, gamma=0.9, lambda_=-0.1)
        with pytest.raises(ValueError, match="`gamma`.*scalar"):
            _gae(gamma=jnp.array([0.9, 0.99]), lambda_=0.5)
        with pytest.raises(ValueError, match="`rewards`"):
            gae_advantages(jnp.float32(1.0), VALUES, NEXT_VALUES, TERMINATED, DONE, gamma=0.9, lambda_=0.5)
