"""Preference losses: hand-derived golden values, limits, symmetries, gradients, jit/vmap, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.losses import (
    bradley_terry_loss,
    cpl_loss,
    dpo_loss,
    inpo_loss,
    ipo_loss,
    preference_metrics,
    sppo_loss,
)

# A fixed pair used by several golden tests:
#   policy: log pi(y_w) = -1.0, log pi(y_l) = -2.0;  reference: -1.5 and -1.5
#   z = (-1.0 + 1.5) - (-2.0 + 1.5) = 0.5 + 0.5 = 1.0
PC, PR, RC, RR = (jnp.array([v]) for v in (-1.0, -2.0, -1.5, -1.5))


def softplus(x):
    return math.log1p(math.exp(x))


class TestDPO:
    def test_golden_value(self):
        # beta = 2: beta z = 2, loss = -log sigmoid(2) = log(1 + e^-2) = 0.126928
        np.testing.assert_allclose(dpo_loss(PC, PR, RC, RR, beta=2.0), [0.126928], rtol=1e-5)

    def test_golden_label_smoothing(self):
        # eps = 0.25: 0.75 * log(1 + e^-2) + 0.25 * log(1 + e^2)
        #           = 0.75 * 0.126928 + 0.25 * 2.126928 = 0.095196 + 0.531732 = 0.626928
        out = dpo_loss(PC, PR, RC, RR, beta=2.0, label_smoothing=0.25)
        np.testing.assert_allclose(out, [0.626928], rtol=1e-5)

    def test_zero_log_ratios_give_log_two(self):
        zeros = jnp.zeros(5)
        for beta in (0.01, 0.1, 3.0):
            np.testing.assert_allclose(dpo_loss(zeros, zeros, zeros, zeros, beta=beta), np.full(5, math.log(2)), rtol=1e-6)

    def test_swapping_chosen_and_rejected_mirrors_the_margin(self):
        # l(-z) = l(z) + beta z for eps = 0 (softplus(x) - softplus(-x) = x)
        forward = dpo_loss(PC, PR, RC, RR, beta=2.0)
        swapped = dpo_loss(PR, PC, RR, RC, beta=2.0)
        np.testing.assert_allclose(swapped - forward, [2.0], rtol=1e-5)

    def test_label_smoothing_one_half_is_symmetric(self):
        key = jax.random.key(0)
        pc, pr, rc, rr = jax.random.normal(key, (4, 16))
        forward = dpo_loss(pc, pr, rc, rr, beta=0.7, label_smoothing=0.5)
        swapped = dpo_loss(pr, pc, rr, rc, beta=0.7, label_smoothing=0.5)
        np.testing.assert_allclose(forward, swapped, rtol=1e-6)

    def test_gradient_matches_analytic(self):
        # d/d log pi(y_w) of -log sigmoid(beta z) = -beta sigmoid(-beta z) = -2 sigmoid(-2) = -0.238406
        grad = jax.grad(lambda pc: dpo_loss(pc, PR, RC, RR, beta=2.0).sum())(PC)
        np.testing.assert_allclose(grad, [-0.238406], rtol=1e-5)
        grad_rejected = jax.grad(lambda pr: dpo_loss(PC, pr, RC, RR, beta=2.0).sum())(PR)
        np.testing.assert_allclose(grad_rejected, [0.238406], rtol=1e-5)

    def test_reference_gets_no_special_treatment_under_grad(self):
        # The loss is a function of z only: d/d ref_chosen = -d/d policy_chosen.
        g_policy = jax.grad(lambda x: dpo_loss(x, PR, RC, RR, beta=0.3).sum())(PC)
        g_ref = jax.grad(lambda x: dpo_loss(PC, PR, x, RR, beta=0.3).sum())(RC)
        np.testing.assert_allclose(g_policy, -g_ref, rtol=1e-6)


class TestIPO:
    def test_golden_values(self):
        # z = 1; tau = 0.25: target 1/(2 tau) = 2, loss (1 - 2)^2 = 1; tau = 1: (1 - 0.5)^2 = 0.25
        np.testing.assert_allclose(ipo_loss(PC, PR, RC, RR, tau=0.25), [1.0], rtol=1e-6)
        np.testing.assert_allclose(ipo_loss(PC, PR, RC, RR, tau=1.0), [0.25], rtol=1e-6)

    def test_minimum_at_target_margin(self):
        # Loss is zero exactly when z = 1/(2 tau): tau = 0.5 -> target 1 = our z.
        np.testing.assert_allclose(ipo_loss(PC, PR, RC, RR, tau=0.5), [0.0], atol=1e-7)

    def test_gradient_matches_analytic(self):
        # d/dz (z - c)^2 = 2 (z - c) = 2 (1 - 2) = -2 for tau = 0.25
        grad = jax.grad(lambda pc: ipo_loss(pc, PR, RC, RR, tau=0.25).sum())(PC)
        np.testing.assert_allclose(grad, [-2.0], rtol=1e-6)

    def test_length_averaged_variant_is_obtained_by_dividing(self):
        # TRL's variant: divide every log-prob by its completion length before the call.
        lengths_w, lengths_l = jnp.array([4.0]), jnp.array([2.0])
        out = ipo_loss(PC / lengths_w, PR / lengths_l, RC / lengths_w, RR / lengths_l, tau=0.5)
        z = (-1.0 + 1.5) / 4 - (-2.0 + 1.5) / 2  # 0.125 + 0.25 = 0.375
        np.testing.assert_allclose(out, [(z - 1.0) ** 2], rtol=1e-6)


class TestSPPO:
    def test_golden_values(self):
        # log-ratio 0.5; eta = 2, P = 0.75: target 2 * 0.25 = 0.5 -> 0
        policy, prev = jnp.array([-1.0, -1.0, -1.0]), jnp.array([-1.5, -1.5, -1.5])
        out = sppo_loss(policy, prev, jnp.array([0.75, 0.5, 0.0]), eta=2.0)
        # P = 0.5: target 0 -> 0.25; P = 0: target -1 -> (0.5 + 1)^2 = 2.25
        np.testing.assert_allclose(out, [0.0, 0.25, 2.25], rtol=1e-6)

    def test_gradient_matches_analytic(self):
        # d/d log pi of (d - eta (P - 1/2))^2 = 2 (0.5 - (-1)) = 3 for P = 0, eta = 2
        grad = jax.grad(lambda p: sppo_loss(p, jnp.array([-1.5]), jnp.array([0.0]), eta=2.0).sum())(jnp.array([-1.0]))
        np.testing.assert_allclose(grad, [3.0], rtol=1e-6)


class TestINPO:
    def test_golden_value(self):
        # eta = 1, tau = 0.5: weights tau/eta = 0.5 on ref, 0.5 on prev.
        # policy margin -1 - (-2) = 1; ref margin -1 - (-3) = 2; prev margin -2 - (-2) = 0
        # h = 1 - 0.5 * 2 - 0.5 * 0 = 0; target 1/(2 eta) = 0.5 -> loss 0.25
        out = inpo_loss(PC, PR, jnp.array([-1.0]), jnp.array([-3.0]), jnp.array([-2.0]), jnp.array([-2.0]), eta=1.0, tau=0.5)
        np.testing.assert_allclose(out, [0.25], rtol=1e-6)

    def test_tau_equal_eta_is_ipo(self):
        pc, pr, rc, rr, qc, qr = jax.random.normal(jax.random.key(1), (6, 8))
        inpo = inpo_loss(pc, pr, rc, rr, qc, qr, eta=0.3, tau=0.3)
        np.testing.assert_allclose(inpo, ipo_loss(pc, pr, rc, rr, tau=0.3), rtol=1e-5)

    def test_tau_zero_anchors_to_previous_iterate_only(self):
        pc, pr, rc, rr, qc, qr = jax.random.normal(jax.random.key(2), (6, 8))
        a = inpo_loss(pc, pr, rc, rr, qc, qr, eta=0.5, tau=0.0)
        b = inpo_loss(pc, pr, rc + 3.0, rr - 1.0, qc, qr, eta=0.5, tau=0.0)
        np.testing.assert_allclose(a, b, rtol=1e-6)

    def test_tau_above_eta_is_rejected(self):
        with pytest.raises(ValueError, match="tau"):
            inpo_loss(PC, PR, RC, RR, PC, PR, eta=0.1, tau=0.2)


class TestCPL:
    CHOSEN = jnp.array([[-1.0, -1.0]])
    REJECTED = jnp.array([[-2.0, -4.0]])

    def test_golden_value(self):
        # alpha 0.5, lambda 0.5, gamma 1: S+ = 0.5 * -2 = -1, S- = 0.5 * -6 = -3
        # loss = softplus(lambda S- - S+) = softplus(-1.5 + 1) = log(1 + e^-0.5) = 0.474077
        out = cpl_loss(self.CHOSEN, self.REJECTED, alpha=0.5, conservative_bias=0.5)
        np.testing.assert_allclose(out, [0.474077], rtol=1e-5)

    def test_golden_discounted(self):
        # gamma 0.5: S+ = 0.5 (-1 - 0.5) = -0.75, S- = 0.5 (-2 - 2) = -2, lambda S- = -1
        # loss = softplus(-1 + 0.75) = log(1 + e^-0.25)
        out = cpl_loss(self.CHOSEN, self.REJECTED, alpha=0.5, conservative_bias=0.5, discount=0.5)
        np.testing.assert_allclose(out, [softplus(-0.25)], rtol=1e-5)

    def test_mask_drops_steps(self):
        # mask [1, 0]: S+ = -0.5, S- = -1, lambda S- = -0.5 -> softplus(0) = log 2
        for mask in (jnp.array([[True, False]]), jnp.array([[1.0, 0.0]])):
            out = cpl_loss(self.CHOSEN, self.REJECTED, alpha=0.5, conservative_bias=0.5, mask=mask)
            np.testing.assert_allclose(out, [math.log(2)], rtol=1e-6)

    def test_unbiased_loss_is_logistic_in_the_score_difference(self):
        a, b = jax.random.normal(jax.random.key(3), (2, 4, 6))
        out = cpl_loss(a, b, alpha=0.1, conservative_bias=1.0)
        expected = jax.nn.softplus(0.1 * (b.sum(-1) - a.sum(-1)))
        np.testing.assert_allclose(out, expected, rtol=1e-6)

    def test_gradient_matches_analytic(self):
        # dl/d log pi(a_t^+) = -alpha gamma^t sigmoid(lambda S- - S+); here sigmoid(-0.5) = 0.377541
        grad = jax.grad(lambda c: cpl_loss(c, self.REJECTED, alpha=0.5, conservative_bias=0.5, discount=0.5).sum())(self.CHOSEN)
        s = 1.0 / (1.0 + math.exp(0.25))  # sigmoid(-0.25) for the discounted case
        np.testing.assert_allclose(grad, [[-0.5 * s, -0.25 * s]], rtol=1e-5)


class TestBradleyTerry:
    def test_golden_value(self):
        # -log sigmoid(1 - 0) = log(1 + e^-1) = 0.313262
        np.testing.assert_allclose(bradley_terry_loss(jnp.array([1.0]), jnp.array([0.0])), [0.313262], rtol=1e-5)

    def test_is_dpo_with_implicit_rewards(self):
        r_w, r_l = jax.random.normal(jax.random.key(4), (2, 8))
        zeros = jnp.zeros(8)
        np.testing.assert_allclose(bradley_terry_loss(r_w, r_l), dpo_loss(r_w, r_l, zeros, zeros, beta=1.0), rtol=1e-6)


def test_preference_metrics_golden():
    # beta 2: r_w = 2 * 0.5 = 1, r_l = 2 * -0.5 = -1, margin 2, accuracy 1
    metrics = preference_metrics(PC, PR, RC, RR, beta=2.0)
    expected = {"rewards/chosen": 1.0, "rewards/rejected": -1.0, "rewards/margin": 2.0, "rewards/accuracy": 1.0, "logps/chosen": -1.0, "logps/rejected": -2.0}
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=name)


# --- jit / vmap equivalence, one compile for many hyperparameter values -----------------------

PAIR_LOSSES = {
    "dpo": lambda a, b, c, d, h: dpo_loss(a, b, c, d, beta=h, label_smoothing=0.1),
    "ipo": lambda a, b, c, d, h: ipo_loss(a, b, c, d, tau=h),
    "inpo": lambda a, b, c, d, h: inpo_loss(a, b, c, d, 0.5 * a, 0.5 * b, eta=h, tau=0.5 * h),
    "sppo": lambda a, b, c, d, h: sppo_loss(a, b, jax.nn.sigmoid(c), eta=h),
    "cpl": lambda a, b, c, d, h: cpl_loss(jnp.stack([a, c], -1), jnp.stack([b, d], -1), alpha=h, conservative_bias=0.5, discount=0.9),
    "bt": lambda a, b, c, d, h: h * bradley_terry_loss(a, b),
}


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_jit_and_vmap_match_plain_call(name):
    fn = PAIR_LOSSES[name]
    arrays = jax.random.normal(jax.random.key(5), (4, 3, 8))  # 4 arrays, a stack of 3 batches of 8
    plain = jnp.stack([fn(*arrays[:, i], 0.7) for i in range(3)])
    np.testing.assert_allclose(jax.jit(fn)(*arrays[:, 0], 0.7), plain[0], rtol=1e-5, atol=1e-6)
    batched = jax.vmap(fn, in_axes=(0, 0, 0, 0, None))(*arrays, 0.7)
    np.testing.assert_allclose(batched, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_vmap_over_hyperparameter_traces_once(name):
    traces = []

    def loss(a, b, c, d, h):
        traces.append(1)  # Python side effect: runs only when JAX traces `loss`
        return PAIR_LOSSES[name](a, b, c, d, h)

    a, b, c, d = jax.random.normal(jax.random.key(6), (4, 8))
    values = jnp.array([0.1, 0.5, 2.0])
    swept = jax.jit(jax.vmap(loss, in_axes=(None, None, None, None, 0)))(a, b, c, d, values)
    assert len(traces) == 1  # the whole sweep is one program
    jitted = jax.jit(loss)
    for i, value in enumerate(values):
        np.testing.assert_allclose(swept[i], jitted(a, b, c, d, value), rtol=1e-5, atol=1e-6)
    assert len(traces) == 2  # the first scalar call traces; the other values reuse its program


# --- errors name the argument ------------------------------------------------------------------

V = jnp.zeros(3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dpo_loss(V, jnp.zeros(4), V, V, beta=0.1), "policy_rejected_logps"),
        (lambda: dpo_loss(V, V, V, jnp.zeros((3, 1)), beta=0.1), "ref_rejected_logps"),
        (lambda: dpo_loss(V, V, jnp.zeros(3, jnp.int32), V, beta=0.1), "ref_chosen_logps"),
        (lambda: dpo_loss(V, V, V, V, beta=0.0), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=-1.0), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=jnp.ones(3)), "beta"),
        (lambda: dpo_loss(V, V, V, V, beta=0.1, label_smoothing=0.6), "label_smoothing"),
        (lambda: dpo_loss([0.0], V, V, V, beta=0.1), "policy_chosen_logps"),
        (lambda: ipo_loss(V, V, V, V, tau=0.0), "tau"),
        (lambda: sppo_loss(V, V, jnp.array([0.5, 1.2, 0.0]), eta=1.0), "win_prob"),
        (lambda: sppo_loss(V, V, V, eta=-2.0), "eta"),
        (lambda: sppo_loss(V, jnp.zeros(2), V, eta=1.0), "prev_logps"),
        (lambda: inpo_loss(V, V, V, V, V, jnp.zeros(2), eta=1.0, tau=0.1), "prev_rejected_logps"),
        (lambda: inpo_loss(V, V, V, V, V, V, eta=1.0, tau=-0.1), "tau"),
        (lambda: cpl_loss(V, V, alpha=0.1, conservative_bias=0.5), "chosen_logps"),
        (lambda: cpl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.1, conservative_bias=0.0), "conservative_bias"),
        (lambda: cpl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.1, conservative_bias=0.5, discount=1.5), "discount"),
        (lambda: cpl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.1, conservative_bias=0.5, mask=jnp.ones((2, 2))), "mask"),
        (lambda: cpl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.1, conservative_bias=0.5, mask=jnp.ones((2, 3), int)), "mask"),
        (lambda: cpl_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)), alpha=0.0, conservative_bias=0.5), "alpha"),
        (lambda: bradley_terry_loss(V, jnp.zeros(2)), "rejected_rewards"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_traced_hyperparameters_are_not_value_checked_but_shapes_are():
    # A traced beta cannot be range-checked without a host round trip; shapes still are.
    loss = jax.jit(lambda b: dpo_loss(V, V, V, V, beta=b))
    assert np.isfinite(loss(0.1)).all()
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        jax.jit(lambda x: dpo_loss(V, x, V, V, beta=0.1))(jnp.zeros(4))
