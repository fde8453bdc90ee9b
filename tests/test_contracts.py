"""Contracts: every public loss checks its annotations, eagerly and under jit/vmap tracing."""

import inspect
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float, TypeCheckError

from jaxrl_si import _checks, _contracts, losses
from jaxrl_si.losses import (
    augment,
    awr_loss,
    awr_weights,
    categorical_double_q_loss,
    categorical_support,
    clipped_value_loss,
    cpl_loss,
    dpo_loss,
    expectile_loss,
    expectile_weight,
    gae_advantages,
    goal_latent,
    grpo_advantages,
    grpo_loss,
    hilbert_value_loss,
    inpo_loss,
    intensity_jitter,
    ipo_loss,
    iql_value_loss,
    lambda_returns,
    loop_loss,
    n_step_returns,
    normalize_advantages,
    ppo_clip_loss,
    preference_metrics,
    reward_latent,
    sample_latents,
    sppo_loss,
)

V = jnp.array([-1.0, -2.0, -0.5])
SEQ = jnp.array([[-1.0, -0.5, -2.0], [-0.3, -0.2, -0.1]])  # [B=2, T=3]
MASK = jnp.array([[True, True, False], [True, True, True]])
FLAGS = jnp.array([False, True, False])
NEXT_LOGITS = jnp.stack([SEQ, SEQ[::-1]], axis=1)  # [B=2, A=2, N=3]
IMAGES = jnp.ones((2, 4, 4, 1))


def _public_losses():
    return [(name, getattr(losses, name)) for name in losses.__all__]


def _identity(x):
    return x


def test_every_public_loss_is_a_contract():
    checked_call = _contracts.contract(_identity).__code__  # one code object behind every contract
    for name, fn in _public_losses():
        assert fn.__code__ is checked_call, f"{name} is not decorated with `contract`"


# One call per hyperparameter of a public loss, with an integer value inside its valid range, so
# that every form below (int, float, NumPy scalar, 0-d array, tracer) denotes the same number.
HYPERPARAMETERS = {
    "dpo_loss/beta": (1, lambda h: dpo_loss(V, V[::-1], V, V, beta=h)),
    "dpo_loss/label_smoothing": (0, lambda h: dpo_loss(V, V[::-1], V, V, beta=0.5, label_smoothing=h)),
    "ipo_loss/tau": (1, lambda h: ipo_loss(V, V[::-1], V, V, tau=h)),
    "sppo_loss/eta": (1, lambda h: sppo_loss(V, V[::-1], jnp.full(3, 0.75), eta=h)),
    "inpo_loss/eta": (1, lambda h: inpo_loss(V, V[::-1], V, V, V, V, eta=h, tau=0.5)),
    "inpo_loss/tau": (1, lambda h: inpo_loss(V, V[::-1], V, V, V, V, eta=2.0, tau=h)),
    "cpl_loss/alpha": (1, lambda h: cpl_loss(SEQ, SEQ[::-1], alpha=h, conservative_bias=0.5)),
    "cpl_loss/conservative_bias": (1, lambda h: cpl_loss(SEQ, SEQ[::-1], alpha=0.5, conservative_bias=h)),
    "cpl_loss/discount": (1, lambda h: cpl_loss(SEQ, SEQ[::-1], alpha=0.5, conservative_bias=0.5, discount=h)),
    "preference_metrics/beta": (1, lambda h: preference_metrics(V, V[::-1], V, V, beta=h)["rewards/margin"]),
    "ppo_clip_loss/clip_eps": (1, lambda h: ppo_clip_loss(V, V[::-1], V, clip_eps=h)),
    "clipped_value_loss/clip_eps": (1, lambda h: clipped_value_loss(V, V[::-1], V, clip_eps=h)),
    "normalize_advantages/eps": (1, lambda h: normalize_advantages(V, eps=h)),
    "grpo_advantages/eps": (1, lambda h: grpo_advantages(V, eps=h)),
    "grpo_loss/clip_eps": (1, lambda h: grpo_loss(SEQ, SEQ[::-1], SEQ, V[:2], MASK, clip_eps=h, kl_coef=0.1)),
    "grpo_loss/kl_coef": (1, lambda h: grpo_loss(SEQ, SEQ[::-1], SEQ, V[:2], MASK, clip_eps=0.2, kl_coef=h)),
    "loop_loss/clip_eps": (1, lambda h: loop_loss(SEQ, SEQ[::-1], V[:2], MASK, clip_eps=h)),
    "gae_advantages/gamma": (1, lambda h: gae_advantages(V, V[::-1], V, FLAGS, FLAGS, gamma=h, lambda_=0.5)[0]),
    "gae_advantages/lambda_": (1, lambda h: gae_advantages(V, V[::-1], V, FLAGS, FLAGS, gamma=0.9, lambda_=h)[0]),
    "lambda_returns/gamma": (1, lambda h: lambda_returns(V, V[::-1], FLAGS, FLAGS, gamma=h, lambda_=0.5)),
    "lambda_returns/lambda_": (1, lambda h: lambda_returns(V, V[::-1], FLAGS, FLAGS, gamma=0.9, lambda_=h)),
    # An expectile lies in (0, 1), where no integer does: the call halves h = 1 in its own form.
    "expectile_loss/expectile": (1, lambda h: expectile_loss(V, expectile=h / 2)),
    "iql_value_loss/expectile": (1, lambda h: iql_value_loss(V, V[::-1], expectile=h / 2)),
    "expectile_weight/expectile": (1, lambda h: expectile_weight(V, expectile=h / 2)),
    "hilbert_value_loss/expectile": (1, lambda h: hilbert_value_loss(SEQ, SEQ[::-1], SEQ, V[:3], discount=0.9, expectile=h / 2)),
    "hilbert_value_loss/discount": (1, lambda h: hilbert_value_loss(SEQ, SEQ[::-1], SEQ, V[:3], discount=h, expectile=0.9)),
    "goal_latent/radius": (1, lambda h: goal_latent(SEQ, SEQ[::-1], radius=h)),
    "reward_latent/radius": (1, lambda h: reward_latent(SEQ.T, V, radius=h)),
    "reward_latent/ridge": (1, lambda h: reward_latent(SEQ.T, V, ridge=h)),
    "sample_latents/radius": (1, lambda h: sample_latents(jax.random.key(0), (2,), 3, radius=h)),
    "awr_weights/inverse_temperature": (1, lambda h: awr_weights(V, inverse_temperature=h)),
    "awr_weights/max_weight": (1, lambda h: awr_weights(V, inverse_temperature=3.0, max_weight=h)),
    "awr_loss/inverse_temperature": (1, lambda h: awr_loss(V, V[::-1], inverse_temperature=h)),
    "awr_loss/max_weight": (1, lambda h: awr_loss(V, V[::-1], inverse_temperature=3.0, max_weight=h)),
    "n_step_returns/gamma": (1, lambda h: n_step_returns(SEQ, MASK, gamma=h)[0]),
    "categorical_support/v_min": (-1, lambda h: categorical_support(3, h, 1.0)),
    "categorical_support/v_max": (1, lambda h: categorical_support(3, -1.0, h)),
    "categorical_double_q_loss/v_min": (
        -1,
        lambda h: categorical_double_q_loss(SEQ, NEXT_LOGITS, NEXT_LOGITS, V[:2], jnp.array([0.9, 0.0]), v_min=h, v_max=1.0),
    ),
    "categorical_double_q_loss/v_max": (
        1,
        lambda h: categorical_double_q_loss(SEQ, NEXT_LOGITS, NEXT_LOGITS, V[:2], jnp.array([0.9, 0.0]), v_min=-1.0, v_max=h),
    ),
    "intensity_jitter/scale": (1, lambda h: intensity_jitter(jax.random.key(0), IMAGES, scale=h)),
    "augment/intensity_scale": (1, lambda h: augment(jax.random.key(0), IMAGES, pad=1, intensity_scale=h)),
}

EAGER_FORMS = {
    "python float": float,
    "numpy float32": np.float32,
    "numpy 0-d float64 array": lambda h: np.array(h, np.float64),
    "numpy int64": np.int64,
    "jax 0-d array": jnp.float32,
}


def test_every_hyperparameter_of_a_public_loss_is_exercised():
    declared = {
        f"{name}/{arg}"
        for name, fn in _public_losses()
        for arg, hint in typing.get_type_hints(inspect.unwrap(fn)).items()
        if hint == _contracts.RealScalar
    }
    assert declared == set(HYPERPARAMETERS)


@pytest.mark.parametrize("case", sorted(HYPERPARAMETERS))
def test_hyperparameter_forms_are_accepted(case):
    h, call = HYPERPARAMETERS[case]
    expected = call(h)  # a Python int: acceptable where a float is expected (PEP 484)
    for form, convert in EAGER_FORMS.items():
        np.testing.assert_allclose(call(convert(h)), expected, rtol=1e-6, err_msg=form)
    # Traced forms are only traced (`jax.eval_shape`), not compiled: contracts run at trace time.
    assert jax.eval_shape(call, float(h)).shape == expected.shape  # a float32 tracer, as under jit
    assert jax.eval_shape(call, h).shape == expected.shape  # jit turns a Python int into an int32 tracer
    assert jax.eval_shape(jax.vmap(call), jnp.full(2, h, jnp.float32)).shape == (2, *expected.shape)


@pytest.mark.parametrize(
    "fn, args, kwargs",
    [
        (dpo_loss, (V, V[::-1], V, V), {"beta": 0.5}),
        (cpl_loss, (SEQ, SEQ[::-1]), {"alpha": 0.5, "conservative_bias": 0.5, "mask": MASK}),
        (grpo_loss, (SEQ, SEQ[::-1], SEQ, V[:2], MASK), {"clip_eps": 0.2, "kl_coef": 0.1}),
        (gae_advantages, (V, V[::-1], V, FLAGS, FLAGS), {"gamma": 0.9, "lambda_": 0.5}),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_numpy_inputs_give_the_jax_result(fn, args, kwargs):
    # Inputs are annotated `ArrayLike`, as `jnp` functions take them; outputs are `jax.Array`s.
    from_numpy = fn(*(np.asarray(x) for x in args), **kwargs)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(from_numpy))
    jax.tree.map(np.testing.assert_allclose, from_numpy, fn(*args, **kwargs))


def test_a_violation_our_checks_miss_raises_the_contract_error():
    # A bool 0-d array passes `_checks` (it is a scalar > 0) but is not a real hyperparameter.
    with pytest.raises(TypeCheckError, match="parameter 'beta'"):
        dpo_loss(V, V, V, V, beta=jnp.array(True))
    with pytest.raises(TypeCheckError, match="parameter 'clip_eps'"):
        jax.jit(lambda h: ppo_clip_loss(V, V, V, clip_eps=h))(jnp.array(True))


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_a_violation_our_checks_catch_raises_our_named_error_alone(transform):
    with pytest.raises(_checks.ArgumentValueError, match="`ref_rejected_logps`") as info:
        transform(lambda x: dpo_loss(V, V, V, x, beta=0.1))(jnp.zeros(4))
    assert info.value.__suppress_context__  # the contract's longer report is not chained


def test_shape_errors_are_caught_under_vmap():
    with pytest.raises(ValueError, match="`policy_rejected_logps`"):
        jax.vmap(lambda x: dpo_loss(x, V, V, V, beta=0.1))(jnp.zeros((2, 4)))


# --- the decorator itself, on toy functions -----------------------------------------------------


def test_wrong_return_annotation_is_reported():
    @_contracts.contract
    def summed(x: Float[Array, "B"]) -> Float[Array, "B"]:
        return x.sum()

    with pytest.raises(TypeCheckError, match="return value"):
        summed(jnp.zeros(3))


def test_a_body_failure_after_a_violation_gives_the_contract_error():
    @_contracts.contract
    def added(x: Float[Array, "B"], y: Float[Array, "B"]) -> Float[Array, "B"]:
        return x + y  # no checks of its own: broadcasting fails on (3,) + (4,)

    with pytest.raises(TypeCheckError, match="parameter 'y'"):
        added(jnp.zeros(3), jnp.zeros(4))


def test_an_unresolvable_annotation_fails_at_decoration():
    def fn(x: "Undefined") -> None:  # noqa: F821
        del x

    with pytest.raises(NameError, match="Undefined"):
        _contracts.contract(fn)
