"""IQL losses: hand-derived golden values, asymmetry, stopped gradients, jit/vmap, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.losses import awr_loss, awr_weights, expectile_loss, iql_critic_loss, iql_value_loss


class TestExpectileLoss:
    def test_golden_values_and_asymmetry(self):
        # tau = 0.7: u = 2 -> 0.7 * 4 = 2.8; u = -2 -> (1 - 0.7) * 4 = 1.2; u = 0 -> 0;
        # u = -0.5 -> 0.3 * 0.25 = 0.075
        out = expectile_loss(jnp.array([2.0, -2.0, 0.0, -0.5]), expectile=0.7)
        np.testing.assert_allclose(out, [2.8, 1.2, 0.0, 0.075], rtol=1e-6)

    def test_one_half_is_half_the_squared_error(self):
        diff = jax.random.normal(jax.random.key(0), (7,))
        np.testing.assert_allclose(expectile_loss(diff, expectile=0.5), 0.5 * np.square(diff), rtol=1e-6)

    def test_shape_is_preserved(self):
        diff = jnp.ones((2, 3, 4))
        assert expectile_loss(diff, expectile=0.9).shape == (2, 3, 4)
        assert expectile_loss(jnp.float32(1.0), expectile=0.9).shape == ()

    def test_minimiser_is_the_expectile(self):
        # Data {0, 1}: the tau-expectile m solves tau (1 - m) = (1 - tau) m, i.e. m = tau.
        y = jnp.array([0.0, 1.0])
        ms = jnp.linspace(0.0, 1.0, 1001)
        risk = jax.vmap(lambda m: expectile_loss(y - m, expectile=0.7).sum())(ms)
        assert float(ms[jnp.argmin(risk)]) == pytest.approx(0.7, abs=1e-3)

    @pytest.mark.parametrize("expectile", [0.0, 1.0, 1.5, -0.1, float("nan")])
    def test_bad_expectile_is_an_error_naming_it(self, expectile):
        with pytest.raises(ValueError, match="expectile"):
            expectile_loss(jnp.ones(3), expectile=expectile)

    def test_integer_diff_is_an_error(self):
        with pytest.raises(TypeError, match="diff"):
            expectile_loss(jnp.ones(3, jnp.int32), expectile=0.7)

    def test_jit_and_vmap_over_a_traced_expectile(self):
        diff = jnp.array([1.0, -1.0])
        out = jax.jit(jax.vmap(lambda e: expectile_loss(diff, expectile=e)))(jnp.array([0.7, 0.9]))
        np.testing.assert_allclose(out, [[0.7, 0.3], [0.9, 0.1]], rtol=1e-6)


class TestValueLoss:
    def test_golden_values_and_gradients(self):
        # q = [1, -1], v = [0, 0], tau = 0.7: u = q - v = [1, -1] -> [0.7, 0.3].
        # d/dv tau_w (q - v)^2 = -2 tau_w (q - v) = [-1.4, 0.6]; no gradient reaches q.
        q, v = jnp.array([1.0, -1.0]), jnp.zeros(2)
        np.testing.assert_allclose(iql_value_loss(q, v, expectile=0.7), [0.7, 0.3], rtol=1e-6)
        grad_q, grad_v = jax.grad(lambda q, v: iql_value_loss(q, v, expectile=0.7).sum(), argnums=(0, 1))(q, v)
        np.testing.assert_allclose(grad_v, [-1.4, 0.6], rtol=1e-6)
        np.testing.assert_array_equal(grad_q, [0.0, 0.0])

    def test_mismatched_shapes_are_an_error(self):
        with pytest.raises(ValueError, match="value"):
            iql_value_loss(jnp.ones(3), jnp.ones(4), expectile=0.7)


class TestCriticLoss:
    def test_golden_values(self):
        # target = r + discount * V(s'): 0.5 + 0.9 * 2 = 2.3 -> (2.3 - 1)^2 = 1.69;
        # a terminal step (discount 0): 0.5 -> (0.5 - 1)^2 = 0.25.
        q, r, v_next = jnp.ones(2), jnp.full(2, 0.5), jnp.full(2, 2.0)
        out = iql_critic_loss(q, r, jnp.array([0.9, 0.0]), v_next)
        np.testing.assert_allclose(out, [1.69, 0.25], rtol=1e-6)

    def test_gradient_reaches_q_only(self):
        # d/dq (y - q)^2 = -2 (y - q) = -2 * 1.3 = -2.6 for the first example above.
        q, r, d, v_next = jnp.ones(1), jnp.full(1, 0.5), jnp.full(1, 0.9), jnp.full(1, 2.0)
        grads = jax.grad(lambda *a: iql_critic_loss(*a).sum(), argnums=(0, 1, 2, 3))(q, r, d, v_next)
        np.testing.assert_allclose(grads[0], [-2.6], rtol=1e-6)
        for g in grads[1:]:
            np.testing.assert_array_equal(g, [0.0])

    def test_twin_heads_broadcast_shape(self):
        q = jnp.zeros((2, 5))
        assert iql_critic_loss(q, jnp.zeros((2, 5)), jnp.ones((2, 5)), jnp.ones((2, 5))).shape == (2, 5)


class TestAdvantageWeighting:
    def test_golden_weights_and_clip(self):
        # beta = 3: A = 0 -> 1; A = 1 -> e^3 = 20.0855; A = 10 -> e^30 clipped to 100; A = -1 -> e^-3.
        out = awr_weights(jnp.array([0.0, 1.0, 10.0, -1.0]), inverse_temperature=3.0)
        np.testing.assert_allclose(out, [1.0, math.exp(3.0), 100.0, math.exp(-3.0)], rtol=1e-5)

    def test_zero_inverse_temperature_is_behaviour_cloning(self):
        logp = jnp.array([-2.0, -0.5])
        np.testing.assert_allclose(awr_loss(logp, jnp.array([5.0, -5.0]), inverse_temperature=0.0), [2.0, 0.5], rtol=1e-6)

    def test_golden_loss_and_stopped_advantage_gradient(self):
        # A = ln(2) / 3 with beta = 3: weight 2, loss = -2 * log_prob = [4, 2]; d loss / d logp = -2.
        logp, adv = jnp.array([-2.0, -1.0]), jnp.full(2, math.log(2.0) / 3.0)
        np.testing.assert_allclose(awr_loss(logp, adv, inverse_temperature=3.0), [4.0, 2.0], rtol=1e-5)
        grad_logp, grad_adv = jax.grad(lambda l, a: awr_loss(l, a, inverse_temperature=3.0).sum(), argnums=(0, 1))(logp, adv)
        np.testing.assert_allclose(grad_logp, [-2.0, -2.0], rtol=1e-5)
        np.testing.assert_array_equal(grad_adv, [0.0, 0.0])

    def test_custom_clip(self):
        np.testing.assert_allclose(awr_weights(jnp.array([1.0]), inverse_temperature=3.0, max_weight=5.0), [5.0])

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [({"inverse_temperature": -1.0}, "inverse_temperature"), ({"inverse_temperature": 1.0, "max_weight": 0.0}, "max_weight")],
    )
    def test_bad_hyperparameters_are_errors_naming_them(self, kwargs, name):
        with pytest.raises(ValueError, match=name):
            awr_weights(jnp.ones(2), **kwargs)

    def test_under_jit_equals_eager(self):
        logp, adv = jnp.array([-1.0, -3.0]), jnp.array([0.2, -0.4])
        eager = awr_loss(logp, adv, inverse_temperature=3.0)
        jitted = jax.jit(lambda l, a, b: awr_loss(l, a, inverse_temperature=b))(logp, adv, 3.0)
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)
