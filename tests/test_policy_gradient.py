"""Policy-gradient losses and advantages: hand-derived golden values, gradients, jit/vmap, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.losses.policy_gradient import (
    categorical_entropy,
    clipped_value_loss,
    gaussian_entropy,
    grpo_advantages,
    grpo_loss,
    k3_kl,
    loop_advantages,
    loop_loss,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
    rloo_advantages,
    value_loss,
)

LN2 = math.log(2.0)

# PPO cases with eps = 0.2 (clip range [0.8, 1.2]), logp_old = 0 so rho = exp(logp):
#   rho  A   rho*A  clip(rho)*A  min    loss   active term -> d loss / d logp = -rho*A or 0
#   1.1  +1  1.1    1.1          1.1    -1.1   both (inside)  -1.1
#   1.5  +1  1.5    1.2          1.2    -1.2   clipped         0
#   0.5  +1  0.5    0.8          0.5    -0.5   unclipped      -0.5
#   1.5  -1  -1.5   -1.2         -1.5   1.5    unclipped       1.5
#   0.5  -1  -0.5   -0.8         -0.8   0.8    clipped         0
#   1.1  -1  -1.1   -1.1         -1.1   1.1    both (inside)   1.1
RATIOS = jnp.array([1.1, 1.5, 0.5, 1.5, 0.5, 1.1])
ADVS = jnp.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
PPO_LOSS = [-1.1, -1.2, -0.5, 1.5, 0.8, 1.1]
PPO_GRAD = [-1.1, 0.0, -0.5, 1.5, 0.0, 1.1]

# Two sequences of T = 3 tokens, the last one padding. logp_old = 0, so rho_t = exp(logp_t).
#   token 0: rho = 1.1, logp_ref = logp               -> k3 = 0
#   token 1: rho = 1.5, logp_ref = log 0.75 = logp + log 0.5 -> k3 = 0.5 - log 0.5 - 1 = 0.193147
SEQ_LOGP = jnp.log(jnp.array([[1.1, 1.5, 9.0], [1.1, 1.5, 9.0]]))
SEQ_OLD = jnp.zeros((2, 3))
SEQ_REF = jnp.log(jnp.array([[1.1, 0.75, 1.0], [1.1, 0.75, 1.0]]))
SEQ_ADV = jnp.array([1.0, -1.0])
SEQ_MASK = jnp.array([[True, True, False], [True, True, False]])
K3_HALF = 0.5 + LN2 - 1.0  # 0.193147


def _rand(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape)


class TestPPO:
    def test_golden_clip_cases(self):
        out = ppo_clip_loss(jnp.log(RATIOS), jnp.zeros(6), ADVS, clip_eps=0.2)
        np.testing.assert_allclose(out, PPO_LOSS, rtol=1e-6)

    def test_gradient_is_analytic_and_zero_when_clipped(self):
        grad = jax.grad(lambda lp: ppo_clip_loss(lp, jnp.zeros(6), ADVS, clip_eps=0.2).sum())(jnp.log(RATIOS))
        np.testing.assert_allclose(grad, PPO_GRAD, rtol=1e-6, atol=1e-7)

    def test_at_ratio_one_gradient_is_minus_advantage(self):
        adv = jnp.array([2.0, -3.0])
        grad = jax.grad(lambda lp: ppo_clip_loss(lp, lp, adv, clip_eps=0.1).sum())(jnp.zeros(2))
        np.testing.assert_allclose(grad, -adv)

    def test_zero_eps_value_is_minus_ratio_weighted_pessimism(self):
        # eps = 0: loss = -min(rho A, A); rho = 1.5, A = 1 -> -1;  rho = 1.5, A = -1 -> 1.5
        out = ppo_clip_loss(jnp.log(jnp.array([1.5, 1.5])), jnp.zeros(2), jnp.array([1.0, -1.0]), clip_eps=0.0)
        np.testing.assert_allclose(out, [-1.0, 1.5], rtol=1e-6)


class TestValueLosses:
    # eps = 0.2:  V    V_old  R    (V-R)^2  V_old+clip(V-V_old)  (.-R)^2  0.5*max
    #             1.0  0.5    2.0  1.0      0.7                  1.69     0.845
    #             1.0  0.9    2.0  1.0      1.0 (inside)         1.0      0.5
    #             1.0  0.0    0.5  0.25     0.2                  0.09     0.125
    V, V_OLD, R = jnp.array([1.0, 1.0, 1.0]), jnp.array([0.5, 0.9, 0.0]), jnp.array([2.0, 2.0, 0.5])

    def test_golden_clipped(self):
        out = clipped_value_loss(self.V, self.V_OLD, self.R, clip_eps=0.2)
        np.testing.assert_allclose(out, [0.845, 0.5, 0.125], rtol=1e-6)

    def test_gradient(self):
        # row 0: clipped term active, clip saturated -> 0; row 1: V - R = -1; row 2: V - R = 0.5
        grad = jax.grad(lambda v: clipped_value_loss(v, self.V_OLD, self.R, clip_eps=0.2).sum())(self.V)
        np.testing.assert_allclose(grad, [0.0, -1.0, 0.5], rtol=1e-6, atol=1e-7)

    def test_plain_value_loss_and_large_eps_limit(self):
        np.testing.assert_allclose(value_loss(self.V, self.R), [0.5, 0.5, 0.125], rtol=1e-6)
        np.testing.assert_allclose(clipped_value_loss(self.V, self.V_OLD, self.R, clip_eps=10.0), value_loss(self.V, self.R))


class TestNormalizeAdvantages:
    def test_golden_ddof_zero_and_one(self):
        # [1, 2, 3, 4]: mean 2.5; ddof 0: var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25, std 1.118034
        x = jnp.array([1.0, 2.0, 3.0, 4.0])
        np.testing.assert_allclose(normalize_advantages(x), [-1.341641, -0.447214, 0.447214, 1.341641], rtol=1e-5)
        # ddof 1 (CleanRL): var = 5 / 3, std 1.290994
        np.testing.assert_allclose(normalize_advantages(x, ddof=1), [-1.161895, -0.387298, 0.387298, 1.161895], rtol=1e-5)

    def test_mask(self):
        # masked-in [1, 2, 3]: mean 2, var 2/3, std 0.816497 -> [-1.224745, 0, 1.224745]; masked-out -> 0
        x = jnp.array([1.0, 2.0, 3.0, jnp.inf])
        out = normalize_advantages(x, jnp.array([1.0, 1.0, 1.0, 0.0]))
        np.testing.assert_allclose(out, [-1.224745, 0.0, 1.224745, 0.0], rtol=1e-5, atol=1e-7)

    def test_standardised_over_all_axes(self):
        out = normalize_advantages(_rand((4, 8), 0) * 3.0 + 1.0)
        np.testing.assert_allclose([out.mean(), out.std()], [0.0, 1.0], atol=1e-5)


class TestEntropy:
    def test_categorical_golden(self):
        # uniform over 4: log 4;  probs [1/4, 3/4]: 0.25 log 4 + 0.75 log(4/3) = 0.346574 + 0.215762
        logits = jnp.array([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -jnp.inf, -jnp.inf]])
        np.testing.assert_allclose(categorical_entropy(logits), [math.log(4.0), 0.562335], rtol=1e-5)

    def test_categorical_masked_action_has_finite_gradient(self):
        grad = jax.grad(lambda x: categorical_entropy(x))(jnp.array([0.0, 1.0, -jnp.inf]))
        assert np.all(np.isfinite(grad)) and grad[2] == 0.0

    def test_gaussian_golden(self):
        # sigma = (1, 2): log 1 + log 2 + 2 * (1 + log 2 pi) / 2 = 0.693147 + 2.837877
        np.testing.assert_allclose(gaussian_entropy(jnp.array([0.0, LN2])), 3.531024, rtol=1e-6)


class TestReinforce:
    LOGP, RET, BASE = jnp.array([-1.0, -2.0]), jnp.array([3.0, 1.0]), jnp.array([1.0, 1.0])

    def test_golden(self):
        # -(R - b) logp = [-(2)(-1), -(0)(-2)] = [2, 0];  without baseline: -R logp = [3, 2]
        np.testing.assert_allclose(reinforce_loss(self.LOGP, self.RET, self.BASE), [2.0, 0.0])
        np.testing.assert_allclose(reinforce_loss(self.LOGP, self.RET), [3.0, 2.0])

    def test_gradient_flows_only_through_logp(self):
        total = lambda *a: reinforce_loss(*a).sum()
        g_logp, g_ret, g_base = jax.grad(total, argnums=(0, 1, 2))(self.LOGP, self.RET, self.BASE)
        np.testing.assert_allclose(g_logp, [-2.0, 0.0])
        np.testing.assert_allclose(g_ret, 0.0)
        np.testing.assert_allclose(g_base, 0.0)


class TestGroupAdvantages:
    def test_rloo_golden_k3(self):
        # [1, 2, 6]: A_0 = 1 - (2 + 6)/2 = -3;  A_1 = 2 - (1 + 6)/2 = -1.5;  A_2 = 6 - (1 + 2)/2 = 4.5
        # second group, K = 3, [0, 0, 3]: [0 - 1.5, 0 - 1.5, 3 - 0] = [-1.5, -1.5, 3]
        out = rloo_advantages(jnp.array([[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]))
        np.testing.assert_allclose(out, [[-3.0, -1.5, 4.5], [-1.5, -1.5, 3.0]], rtol=1e-6)
        np.testing.assert_allclose(out.sum(-1), 0.0, atol=1e-6)

    def test_loop_is_rloo(self):
        r = _rand((3, 5), 1)
        np.testing.assert_array_equal(loop_advantages(r), rloo_advantages(r))

    def test_grpo_golden(self):
        # [1, 2, 6]: mean 3, deviations [-2, -1, 3], sum sq 14
        r = jnp.array([1.0, 2.0, 6.0])
        # ddof 1: std sqrt(7) = 2.645751
        np.testing.assert_allclose(grpo_advantages(r, eps=0.0), [-0.755929, -0.377964, 1.133893], rtol=1e-5)
        # ddof 0: std sqrt(14 / 3) = 2.160247
        np.testing.assert_allclose(grpo_advantages(r, ddof=0, eps=0.0), [-0.925820, -0.462910, 1.388730], rtol=1e-5)
        # defaults (TRL): std + 1e-4 = 2.645851
        np.testing.assert_allclose(grpo_advantages(r), [-0.755900, -0.377950, 1.133850], rtol=1e-5)

    def test_grpo_equal_rewards_and_affine_invariance(self):
        np.testing.assert_array_equal(grpo_advantages(jnp.full((2, 4), 0.7)), 0.0)
        r = _rand((2, 6), 2)
        shifted = grpo_advantages(3.0 * r - 5.0, eps=0.0)
        np.testing.assert_allclose(shifted, grpo_advantages(r, eps=0.0), rtol=1e-4, atol=1e-5)


class TestK3KL:
    def test_golden_zero_and_positive(self):
        # ref/pi = 0.5: 0.5 - log 0.5 - 1 = 0.193147
        np.testing.assert_allclose(k3_kl(jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))), [K3_HALF], rtol=1e-5)
        lp = _rand((10,), 3)
        np.testing.assert_array_equal(k3_kl(lp, lp), 0.0)
        assert np.all(k3_kl(lp, _rand((10,), 4)) > 0)

    def test_expectation_under_pi_is_exact_kl(self):
        # pi = [0.5, 0.5], ref = [0.25, 0.75]: KL = 0.5 log 2 + 0.5 log(2/3) = 0.143841
        pi, ref = jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75])
        np.testing.assert_allclose(jnp.sum(pi * k3_kl(jnp.log(pi), jnp.log(ref))), 0.143841, rtol=1e-5)

    def test_gradient_zero_at_reference(self):
        np.testing.assert_allclose(jax.grad(lambda lp: k3_kl(lp, jnp.zeros(3)).sum())(jnp.zeros(3)), 0.0)


class TestGRPOAndLOOPLoss:
    def test_grpo_golden(self):
        # eps 0.2, beta 0.1, mean over 2 valid tokens:
        # A = +1: [1.1 - 0] and [min(1.5, 1.2) - 0.1 * 0.193147 = 1.180685] -> -(2.280685 / 2) = -1.140343
        # A = -1: [-1.1 - 0] and [min(-1.5, -1.2) - 0.019315 = -1.519315] -> (2.619315 / 2) = 1.309657
        out = grpo_loss(SEQ_LOGP, SEQ_OLD, SEQ_REF, SEQ_ADV, SEQ_MASK, clip_eps=0.2, kl_coef=0.1)
        np.testing.assert_allclose(out, [-1.1403427, 1.3096574], rtol=1e-5)

    def test_padding_with_inf_stays_finite(self):
        pad = jnp.array([[0.0, 0.0, -jnp.inf]] * 2)
        f = lambda lp: grpo_loss(lp, SEQ_OLD + pad, SEQ_REF + pad, SEQ_ADV, SEQ_MASK, clip_eps=0.2, kl_coef=0.1)
        np.testing.assert_allclose(f(SEQ_LOGP + pad), f(SEQ_LOGP), rtol=1e-6)
        grad = jax.grad(lambda lp: f(lp).sum())(SEQ_LOGP + pad)
        assert np.all(np.isfinite(grad)) and np.all(grad[:, 2] == 0.0)

    def test_loop_golden_lower_bounds(self):
        # eps 0.25, A = -1, rho = [0.75, 1.5]: token 1 gives min(-1.5, -1.25) = -1.5 either way;
        # token 0 paper: clip at 0.75 -> -0.75, mean -1.125; reciprocal: clip at 1/1.25 = 0.8 -> -0.8, mean -1.15
        logp, adv, mask = jnp.log(jnp.array([[0.75, 1.5]])), jnp.array([-1.0]), jnp.ones((1, 2))
        np.testing.assert_allclose(loop_loss(logp, jnp.zeros((1, 2)), adv, mask, clip_eps=0.25), [1.125], rtol=1e-6)
        out = loop_loss(logp, jnp.zeros((1, 2)), adv, mask, clip_eps=0.25, lower_bound="reciprocal")
        np.testing.assert_allclose(out, [1.15], rtol=1e-6)

    def test_loop_is_token_mean_of_ppo_and_grpo_without_kl(self):
        logp, old, ref, adv = _rand((3, 5), 5) * 0.3, _rand((3, 5), 6) * 0.3, _rand((3, 5), 7), _rand((3,), 8)
        mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], jnp.float32)
        loop = loop_loss(logp, old, adv, mask, clip_eps=0.2)
        per_token = ppo_clip_loss(logp, old, jnp.broadcast_to(adv[:, None], (3, 5)), clip_eps=0.2)
        np.testing.assert_allclose(loop, (per_token * mask).sum(-1) / mask.sum(-1), rtol=1e-5)
        np.testing.assert_allclose(loop, grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.0), rtol=1e-6)

    def test_on_policy_gradient_is_minus_advantage_over_length(self):
        # logp_old = logp (one update per sample): d loss_i / d logp_it = -A_i / |o_i| on valid tokens
        grad = jax.grad(lambda lp: grpo_loss(lp, lp, lp, SEQ_ADV, SEQ_MASK, clip_eps=0.2, kl_coef=0.1).sum())(SEQ_LOGP)
        np.testing.assert_allclose(grad, [[-0.5, -0.5, 0.0], [0.5, 0.5, 0.0]], atol=1e-7)


_B = 2
_PER_ROW_CASES = {
    "ppo_clip_loss": (functools.partial(ppo_clip_loss, clip_eps=0.2), ((_B, 3), (_B, 3), (_B, 3))),
    "value_loss": (value_loss, ((_B, 3), (_B, 3))),
    "clipped_value_loss": (functools.partial(clipped_value_loss, clip_eps=0.2), ((_B, 3), (_B, 3), (_B, 3))),
    "normalize_advantages": (normalize_advantages, ((_B, 4),)),
    "categorical_entropy": (categorical_entropy, ((_B, 4),)),
    "gaussian_entropy": (gaussian_entropy, ((_B, 4),)),
    "reinforce_loss": (reinforce_loss, ((_B, 3), (_B, 3), (_B, 3))),
    "rloo_advantages": (rloo_advantages, ((_B, 4),)),
    "grpo_advantages": (grpo_advantages, ((_B, 4),)),
    "k3_kl": (k3_kl, ((_B, 3), (_B, 3))),
    "grpo_loss": (functools.partial(grpo_loss, clip_eps=0.2, kl_coef=0.04), ((_B, 5), (_B, 5), (_B, 5), (_B,), "mask")),
    "loop_loss": (functools.partial(loop_loss, clip_eps=0.1, lower_bound="reciprocal"), ((_B, 5), (_B, 5), (_B,), "mask")),
}


def _make_args(shapes):
    mask = jnp.array([[True, True, True, False, False], [True, True, True, True, True]])
    return [mask if s == "mask" else 0.3 * _rand(s, i) for i, s in enumerate(shapes)]


@pytest.mark.parametrize("name", sorted(_PER_ROW_CASES))
def test_jit_and_vmap_equal_plain_call(name):
    fn, shapes = _PER_ROW_CASES[name]
    args = _make_args(shapes)
    plain = fn(*args)
    np.testing.assert_allclose(jax.jit(fn)(*args), plain, rtol=1e-6, atol=1e-7)
    rows = jnp.stack([fn(*[a[i] for a in args]) for i in range(_B)])
    np.testing.assert_allclose(jax.vmap(fn)(*args), rows, rtol=1e-6, atol=1e-7)
    if name not in ("normalize_advantages",):  # per-row stats differ from whole-batch stats
        np.testing.assert_allclose(rows, plain, rtol=1e-6, atol=1e-7)


_SWEEPS = {
    "ppo_clip_loss/clip_eps": lambda h: ppo_clip_loss(jnp.log(RATIOS), jnp.zeros(6), ADVS, clip_eps=h),
    "clipped_value_loss/clip_eps": lambda h: clipped_value_loss(
        TestValueLosses.V, TestValueLosses.V_OLD, TestValueLosses.R, clip_eps=h
    ),
    "grpo_loss/kl_coef": lambda h: grpo_loss(SEQ_LOGP, SEQ_OLD, SEQ_REF, SEQ_ADV, SEQ_MASK, clip_eps=0.2, kl_coef=h),
    "loop_loss/clip_eps": lambda h: loop_loss(SEQ_LOGP, SEQ_OLD, SEQ_ADV, SEQ_MASK, clip_eps=h, lower_bound="reciprocal"),
    "grpo_advantages/eps": lambda h: grpo_advantages(jnp.array([1.0, 2.0, 6.0]), eps=h),
}


@pytest.mark.parametrize("name", sorted(_SWEEPS))
def test_vmap_over_hyperparameter_equals_per_value_calls(name):
    traces = []

    def f(h):
        traces.append(1)
        return _SWEEPS[name](h)

    values = [0.0, 0.1, 0.3]
    swept = jax.jit(jax.vmap(f))(jnp.array(values))
    for i, h in enumerate(values):
        np.testing.assert_allclose(swept[i], _SWEEPS[name](h), rtol=1e-6, atol=1e-7)
    jitted = jax.jit(f)
    jitted(jnp.float32(0.1)), jitted(jnp.float32(0.3))
    assert len(traces) == 2  # one trace for the sweep, one for both jitted values


class TestErrors:
    def test_mismatched_shapes_name_the_argument(self):
        with pytest.raises(ValueError, match="`advantages`"):
            ppo_clip_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4), clip_eps=0.2)
        with pytest.raises(ValueError, match="`advantages`"):
            grpo_loss(SEQ_LOGP, SEQ_OLD, SEQ_REF, jnp.zeros(3), SEQ_MASK, clip_eps=0.2, kl_coef=0.1)
        with pytest.raises(ValueError, match="`mask`"):
            loop_loss(SEQ_LOGP, SEQ_OLD, SEQ_ADV, SEQ_MASK[:, :2], clip_eps=0.2)
        with pytest.raises(ValueError, match="`baseline`"):
            reinforce_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(2))

    def test_int_dtypes_name_the_argument(self):
        with pytest.raises(TypeError, match="`logp`"):
            ppo_clip_loss(jnp.zeros(3, int), jnp.zeros(3), jnp.zeros(3), clip_eps=0.2)
        with pytest.raises(TypeError, match="`rewards`"):
            rloo_advantages(jnp.arange(3))
        with pytest.raises(TypeError, match="`mask`"):
            grpo_loss(SEQ_LOGP, SEQ_OLD, SEQ_REF, SEQ_ADV, SEQ_MASK.astype(int), clip_eps=0.2, kl_coef=0.1)

    def test_group_of_one_is_rejected(self):
        for fn in (rloo_advantages, loop_advantages, grpo_advantages):
            with pytest.raises(ValueError, match="`rewards`.*K >= 2"):
                fn(jnp.zeros((4, 1)))

    def test_bad_hyperparameters_name_the_argument(self):
        with pytest.raises(ValueError, match="`clip_eps`"):
            ppo_clip_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), clip_eps=-0.1)
        with pytest.raises(ValueError, match="`clip_eps`"):
            clipped_value_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), clip_eps=-0.1)
        with pytest.raises(ValueError, match="`clip_eps`.*scalar"):
            loop_loss(SEQ_LOGP, SEQ_OLD, SEQ_ADV, SEQ_MASK, clip_eps=jnp.array([0.1, 0.2]))
        with pytest.raises(ValueError, match="`kl_coef`"):
            grpo_loss(SEQ_LOGP, SEQ_OLD, SEQ_REF, SEQ_ADV, SEQ_MASK, clip_eps=0.2, kl_coef=-1.0)
        with pytest.raises(ValueError, match="`lower_bound`"):
            loop_loss(SEQ_LOGP, SEQ_OLD, SEQ_ADV, SEQ_MASK, clip_eps=0.2, lower_bound="code")
        with pytest.raises(ValueError, match="`ddof`"):
            normalize_advantages(jnp.zeros(3), ddof=-1)
        with pytest.raises(ValueError, match="`advantages`"):
            normalize_advantages(jnp.zeros(1), ddof=1)
