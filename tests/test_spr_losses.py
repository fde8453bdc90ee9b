"""SPR and C51 maths: hand-derived golden values, masks, stopped gradients, augmentations, errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.losses import (
    augment,
    categorical_double_q_loss,
    categorical_l2_project,
    categorical_q_values,
    categorical_support,
    intensity_jitter,
    n_step_returns,
    random_shift,
    spr_cosine,
    spr_loss,
)

# One example (B = 1), K = 3 steps, D = 2: orthogonal, parallel (scaled) and opposite pairs.
#   ‖u − v‖² of the unit vectors: (1,0) vs (0,1) -> 2;  (1,2)/√5 vs itself -> 0;  (1,0) vs (−1,0) -> 4.
PREDICTIONS = jnp.array([[[1.0, 0.0], [1.0, 2.0], [1.0, 0.0]]])
TARGETS = jnp.array([[[0.0, 3.0], [2.0, 4.0], [-5.0, 0.0]]])
COSINES = [0.0, 1.0, -1.0]


class TestSPRLoss:
    def test_golden_values(self):
        # (2 + 0 + 4) / 3 = 2
        np.testing.assert_allclose(spr_loss(PREDICTIONS, TARGETS, jnp.ones((1, 3))), [2.0], rtol=1e-6)

    def test_per_step_values(self):
        for k, expected in enumerate([2.0, 0.0, 4.0]):
            out = spr_loss(PREDICTIONS[:, k : k + 1], TARGETS[:, k : k + 1], jnp.ones((1, 1)))
            np.testing.assert_allclose(out, [expected], rtol=1e-6, atol=1e-6)

    def test_scale_invariance(self):
        mask = jnp.ones((1, 3))
        scaled = spr_loss(7.0 * PREDICTIONS, 0.01 * TARGETS, mask)
        np.testing.assert_allclose(scaled, spr_loss(PREDICTIONS, TARGETS, mask), rtol=1e-6)

    def test_masked_steps_contribute_zero_but_k_still_divides(self):
        # mask [1, 1, 0]: (2 + 0) / 3, not (2 + 0) / 2; mask [0, 1, 1]: (0 + 4) / 3.
        mask = jnp.array([[True, True, False]])
        np.testing.assert_allclose(spr_loss(PREDICTIONS, TARGETS, mask), [2.0 / 3.0], rtol=1e-6)
        np.testing.assert_allclose(spr_loss(PREDICTIONS, TARGETS, jnp.array([[0.0, 1.0, 1.0]])), [4.0 / 3.0], rtol=1e-6)
        np.testing.assert_array_equal(spr_loss(PREDICTIONS, TARGETS, jnp.zeros((1, 3), bool)), [0.0])

    def test_float_mask_equals_bool_mask(self):
        mask = jnp.array([[True, False, True], [False, True, True]])
        preds, targets = jnp.concatenate([PREDICTIONS] * 2), jnp.concatenate([TARGETS] * 2)
        np.testing.assert_allclose(spr_loss(preds, targets, mask), spr_loss(preds, targets, mask.astype(jnp.float32)))

    def test_no_gradient_reaches_the_targets(self):
        # K = 1, p = (1, 0), t̂ = (0, 1): dL/du = 2 (u − t̂) = (2, −2), du/dp = I − u uᵀ = diag(0, 1)
        # at ‖p‖ = 1, so dL/dp = (0, −2).
        p, t, mask = PREDICTIONS[:, :1], TARGETS[:, :1], jnp.ones((1, 1))
        grad_p, grad_t = jax.grad(lambda p, t: spr_loss(p, t, mask).sum(), argnums=(0, 1))(p, t)
        np.testing.assert_allclose(grad_p, [[[0.0, -2.0]]], atol=1e-6)
        np.testing.assert_array_equal(grad_t, jnp.zeros_like(t))

    def test_zero_vectors_give_finite_values_and_gradients(self):
        # A zero prediction normalises to 0: ‖0 − (1, 0)‖² = 1.
        p, t, mask = jnp.zeros((1, 1, 2)), jnp.array([[[4.0, 0.0]]]), jnp.ones((1, 1))
        np.testing.assert_allclose(spr_loss(p, t, mask), [1.0])
        grad = jax.grad(lambda p: spr_loss(p, t, mask).sum())(p)
        assert bool(jnp.all(jnp.isfinite(grad)))

    def test_under_jit_equals_eager(self):
        mask = jnp.array([[1.0, 0.0, 1.0]])
        np.testing.assert_allclose(jax.jit(spr_loss)(PREDICTIONS, TARGETS, mask), spr_loss(PREDICTIONS, TARGETS, mask))

    @pytest.mark.parametrize(
        ("args", "name"),
        [
            ((PREDICTIONS, TARGETS[:, :2], jnp.ones((1, 3))), "targets"),
            ((PREDICTIONS, TARGETS, jnp.ones((1, 2))), "mask"),
            ((PREDICTIONS, TARGETS, jnp.ones((1, 3), jnp.int32)), "mask"),
            ((PREDICTIONS[0], TARGETS[0], jnp.ones((3,))), "predictions"),
        ],
    )
    def test_bad_inputs_are_errors_naming_them(self, args, name):
        with pytest.raises((TypeError, ValueError), match=name):
            spr_loss(*args)


class TestSPRCosine:
    def test_golden_values_over_unmasked_steps(self):
        # cosines [0, 1, −1]: mask [1, 0, 1] -> (0 − 1) / 2; mask [0, 1, 0] -> 1.
        mask = jnp.array([[True, False, True]])
        np.testing.assert_allclose(spr_cosine(PREDICTIONS, TARGETS, mask), [-0.5], atol=1e-6)
        np.testing.assert_allclose(spr_cosine(PREDICTIONS, TARGETS, jnp.array([[0.0, 1.0, 0.0]])), [1.0], rtol=1e-6)

    def test_all_masked_is_zero(self):
        np.testing.assert_array_equal(spr_cosine(PREDICTIONS, TARGETS, jnp.zeros((1, 3))), [0.0])

    def test_unmasked_equals_one_minus_half_the_loss(self):
        preds, targets = jax.random.normal(jax.random.key(0), (2, 4, 2, 5))
        mask = jnp.ones((4, 2))
        np.testing.assert_allclose(
            spr_cosine(preds, targets, mask), 1.0 - spr_loss(preds, targets, mask) / 2.0, rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            spr_cosine(PREDICTIONS, TARGETS, jnp.ones((1, 3))), [np.mean(COSINES)], atol=1e-6
        )


def _crops_of_edge_padded(image: np.ndarray, pad: int) -> dict[tuple[int, int], np.ndarray]:
    """Every H×W window of the edge-padded `image` [H, W, C], keyed by its top-left corner."""
    height, width, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return {
        (u, v): padded[u : u + height, v : v + width]
        for u in range(2 * pad + 1)
        for v in range(2 * pad + 1)
    }


def _offsets(images: np.ndarray, shifted: np.ndarray, pad: int) -> list[tuple[int, int]]:
    """The crop offset of each shifted image; fails if one is no crop of its edge-padded input."""
    offsets = []
    for image, out in zip(images, shifted, strict=True):
        matches = [uv for uv, crop in _crops_of_edge_padded(image, pad).items() if np.array_equal(crop, out)]
        assert matches, "a shifted image is not a crop of the edge-padded input"
        offsets.append(matches[0])
    return offsets


# Distinct pixel values, so that each crop offset gives a distinct image.
IMAGES = jnp.arange(6 * 5 * 6 * 2, dtype=jnp.float32).reshape(6, 5, 6, 2)


class TestRandomShift:
    def test_shape_and_dtype_are_preserved(self):
        for dtype in (jnp.float32, jnp.bfloat16, jnp.uint8):
            out = random_shift(jax.random.key(0), IMAGES.astype(dtype), pad=2)
            assert out.shape == IMAGES.shape and out.dtype == dtype

    def test_pad_zero_is_the_identity(self):
        np.testing.assert_array_equal(random_shift(jax.random.key(0), IMAGES, pad=0), IMAGES)

    def test_hand_worked_two_by_two(self):
        # [[0, 1], [2, 3]] edge-padded by 1 is [[0,0,1,1], [0,0,1,1], [2,2,3,3], [2,2,3,3]]: its nine
        # 2×2 windows include [[0, 0], [0, 0]] (offset (0, 0)) and [[3, 3], [3, 3]] (offset (2, 2)).
        image = np.array([[0.0, 1.0], [2.0, 3.0]])[None, :, :, None]
        crops = {tuple(c.ravel()) for c in _crops_of_edge_padded(image[0], 1).values()}
        assert (0.0, 0.0, 0.0, 0.0) in crops and (3.0, 3.0, 3.0, 3.0) in crops and len(crops) == 9
        images = np.repeat(image, 64, axis=0)
        out = np.asarray(random_shift(jax.random.key(1), images, pad=1))
        assert {tuple(o.ravel()) for o in out} == crops  # 64 draws reach all nine windows

    def test_every_output_is_a_crop_of_the_edge_padded_input(self):
        shifted = np.asarray(random_shift(jax.random.key(3), IMAGES, pad=2))
        offsets = _offsets(np.asarray(IMAGES), shifted, pad=2)
        assert len(set(offsets)) > 1  # images draw their own offsets

    def test_offsets_cover_zero_to_two_pad(self):
        images = jnp.broadcast_to(jnp.arange(9.0).reshape(1, 3, 3, 1), (300, 3, 3, 1))
        offsets = _offsets(np.asarray(images), np.asarray(random_shift(jax.random.key(4), images, pad=1)), pad=1)
        assert set(offsets) == {(u, v) for u in range(3) for v in range(3)}

    def test_deterministic_per_key(self):
        a = random_shift(jax.random.key(5), IMAGES, pad=2)
        np.testing.assert_array_equal(a, random_shift(jax.random.key(5), IMAGES, pad=2))
        assert not np.array_equal(a, random_shift(jax.random.key(6), IMAGES, pad=2))

    def test_jit_and_vmap_equal_eager(self):
        shift = functools.partial(random_shift, pad=2)
        key = jax.random.key(7)
        np.testing.assert_array_equal(jax.jit(shift)(key, IMAGES), shift(key, IMAGES))
        keys, stacks = jax.random.split(key, 2), jnp.stack([IMAGES, IMAGES + 1000.0])
        batched = jax.jit(jax.vmap(shift))(keys, stacks)
        for i in range(2):
            np.testing.assert_array_equal(batched[i], shift(keys[i], stacks[i]))

    @pytest.mark.parametrize(
        ("images", "kwargs", "name"),
        [
            (IMAGES, {"pad": -1}, "pad"),
            (IMAGES, {"pad": 1.5}, "pad"),
            (IMAGES[0], {"pad": 1}, "images"),
        ],
    )
    def test_bad_inputs_are_errors_naming_them(self, images, kwargs, name):
        with pytest.raises((TypeError, ValueError), match=name):
            random_shift(jax.random.key(0), images, **kwargs)


class TestIntensityJitter:
    def test_one_factor_per_image_within_range(self):
        images = jnp.ones((64, 3, 4, 2))
        out = np.asarray(intensity_jitter(jax.random.key(0), images, scale=0.05))
        factors = out[:, 0, 0, 0]
        np.testing.assert_array_equal(out, np.broadcast_to(factors[:, None, None, None], out.shape))
        assert np.all((factors >= 0.9) & (factors <= 1.1))
        assert len(np.unique(factors)) > 32

    def test_noise_is_clipped_at_two_sigma(self):
        # scale 1: factor 1 + clip(ε, −2, 2) in [−1, 3]; P(|ε| > 2) ≈ 4.6%, so ~46 of 1000 sit on an end.
        factors = np.asarray(intensity_jitter(jax.random.key(1), jnp.ones((1000, 1, 1, 1)), scale=1.0)).ravel()
        assert factors.min() >= -1.0 and factors.max() <= 3.0
        assert np.sum((factors == -1.0) | (factors == 3.0)) > 10

    def test_scales_the_image_multiplicatively(self):
        images = jax.random.uniform(jax.random.key(2), (4, 3, 3, 1))
        out = intensity_jitter(jax.random.key(3), images, scale=0.05)
        ratio = np.asarray(out / images)
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :1], ratio.shape), rtol=1e-5)

    def test_zero_scale_is_the_identity_and_dtype_is_kept(self):
        np.testing.assert_array_equal(intensity_jitter(jax.random.key(0), IMAGES, scale=0.0), IMAGES)
        assert intensity_jitter(jax.random.key(0), IMAGES.astype(jnp.bfloat16)).dtype == jnp.bfloat16

    def test_bad_inputs_are_errors_naming_them(self):
        with pytest.raises(ValueError, match="scale"):
            intensity_jitter(jax.random.key(0), IMAGES, scale=-0.1)
        with pytest.raises(TypeError, match="images"):
            intensity_jitter(jax.random.key(0), IMAGES.astype(jnp.uint8))


class TestAugment:
    def test_is_shift_then_jitter_with_keys_split_by_purpose(self):
        key = jax.random.key(0)
        shift_key, intensity_key = jax.random.split(key)
        expected = intensity_jitter(intensity_key, random_shift(shift_key, IMAGES, pad=2), scale=0.05)
        out = augment(key, IMAGES, pad=2, intensity_scale=0.05)
        np.testing.assert_array_equal(out, expected)
        assert out.shape == IMAGES.shape and out.dtype == IMAGES.dtype

    def test_no_shift_and_no_jitter_is_the_identity(self):
        np.testing.assert_array_equal(augment(jax.random.key(0), IMAGES, pad=0, intensity_scale=0.0), IMAGES)

    def test_bad_intensity_scale_is_an_error_naming_it(self):
        with pytest.raises(ValueError, match="intensity_scale"):
            augment(jax.random.key(0), IMAGES, pad=1, intensity_scale=-1.0)


Z3 = jnp.array([0.0, 1.0, 2.0])


class TestCategoricalProjection:
    def test_half_atom_shift_splits_mass_evenly(self):
        # atoms 0.5, 1.5, 2.5 (masses .2, .4, .4): 0.5 -> .1 to z=0, .1 to z=1; 1.5 -> .2 to z=1,
        # .2 to z=2; 2.5 is clipped to 2 -> .4 to z=2.  Total [.1, .3, .6].
        out = categorical_l2_project(Z3 + 0.5, jnp.array([[0.2, 0.4, 0.4]]), Z3)
        np.testing.assert_allclose(out, [[0.1, 0.3, 0.6]], atol=1e-6)

    def test_split_in_proportion_to_distance(self):
        # one atom at 0.25: 0.75 to z=0, 0.25 to z=1.
        out = categorical_l2_project(jnp.array([0.25]), jnp.array([[1.0]]), Z3)
        np.testing.assert_allclose(out, [[0.75, 0.25, 0.0]], atol=1e-6)

    def test_atoms_beyond_the_range_pile_at_the_ends(self):
        out = categorical_l2_project(jnp.array([[-5.0, 1.0, 7.0], [-1.0, -2.0, -3.0]]), jnp.array([[0.3, 0.3, 0.4]] * 2), Z3)
        np.testing.assert_allclose(out, [[0.3, 0.3, 0.4], [1.0, 0.0, 0.0]], atol=1e-6)

    def test_atoms_on_grid_points_and_identity(self):
        probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (4, 3)))
        np.testing.assert_allclose(categorical_l2_project(Z3, probs, Z3), probs, atol=1e-6)
        # permuted atoms on grid points: the mass follows the atom.
        out = categorical_l2_project(jnp.array([2.0, 0.0, 1.0]), jnp.array([[0.5, 0.2, 0.3]]), Z3)
        np.testing.assert_allclose(out, [[0.2, 0.3, 0.5]], atol=1e-6)

    def test_mass_is_preserved_and_mean_kept_inside_the_range(self):
        k1, k2 = jax.random.split(jax.random.key(1))
        support = jnp.linspace(-1.0, 1.0, 5)
        atoms = jax.random.uniform(k1, (16, 7), minval=-3.0, maxval=3.0)
        probs = jax.nn.softmax(jax.random.normal(k2, (16, 7)))
        out = categorical_l2_project(atoms, probs, support)
        assert bool(jnp.all(out >= 0.0))
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)
        # Linear interpolation keeps the mean of atoms that are inside the range.
        inside = jnp.clip(atoms, -1.0, 1.0)
        np.testing.assert_allclose(categorical_l2_project(inside, probs, support) @ support, (inside * probs).sum(-1), atol=1e-5)

    def test_shared_support_broadcasts(self):
        probs = jax.nn.softmax(jax.random.normal(jax.random.key(2), (3, 4)))
        atoms = jnp.array([-0.3, 0.1, 0.7, 2.2])
        np.testing.assert_allclose(
            categorical_l2_project(atoms, probs, Z3), categorical_l2_project(jnp.broadcast_to(atoms, (3, 4)), probs, Z3)
        )

    def test_uneven_support_splits_by_the_local_gap(self):
        # support [0, 1, 3]: an atom at 2 is halfway between 1 and 3.
        out = categorical_l2_project(jnp.array([2.0]), jnp.array([[1.0]]), jnp.array([0.0, 1.0, 3.0]))
        np.testing.assert_allclose(out, [[0.0, 0.5, 0.5]], atol=1e-6)

    @pytest.mark.parametrize(
        ("args", "name"),
        [
            ((Z3, jnp.ones((1, 3)) / 3, jnp.array([0.0, 2.0, 1.0])), "support_q"),
            ((jnp.zeros(4), jnp.ones((1, 3)) / 3, Z3), "support_p"),
            ((Z3, jnp.ones(3) / 3, Z3), "probs"),
        ],
    )
    def test_bad_inputs_are_errors_naming_them(self, args, name):
        with pytest.raises((TypeError, ValueError), match=name):
            categorical_l2_project(*args)


class TestNStepReturns:
    # rewards [1, 2, 4], gamma 0.5:
    #   no done:          1 + 0.5·2 + 0.25·4 = 3, discount 0.5³ = 0.125
    #   done at step 1:   1 + 0.5·2 = 2 (its own reward counted), discount 0
    #   done at step 0:   1, discount 0
    #   done at step 2:   3, discount 0
    def test_golden_values(self):
        rewards = jnp.tile(jnp.array([1.0, 2.0, 4.0]), (5, 1))
        dones = jnp.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1]], bool)
        returns, discounts = n_step_returns(rewards, dones, gamma=0.5)
        np.testing.assert_allclose(returns, [3.0, 2.0, 1.0, 3.0, 2.0], rtol=1e-6)
        np.testing.assert_allclose(discounts, [0.125, 0.0, 0.0, 0.0, 0.0], rtol=1e-6)
        float_returns, float_discounts = n_step_returns(rewards, dones.astype(jnp.float32), gamma=0.5)
        np.testing.assert_array_equal(float_returns, returns)
        np.testing.assert_array_equal(float_discounts, discounts)

    def test_gamma_limits(self):
        rewards, dones = jnp.array([[1.0, 2.0, 4.0]]), jnp.zeros((1, 3), bool)
        np.testing.assert_allclose(n_step_returns(rewards, dones, gamma=0.0), ([1.0], [0.0]))
        np.testing.assert_allclose(n_step_returns(rewards, dones, gamma=1.0), ([7.0], [1.0]))

    def test_under_jit_with_traced_gamma(self):
        rewards, dones = jnp.array([[1.0, 2.0, 4.0]]), jnp.zeros((1, 3), bool)
        out = jax.jit(lambda g: n_step_returns(rewards, dones, gamma=g))(0.5)
        np.testing.assert_allclose(out, ([3.0], [0.125]), rtol=1e-6)

    def test_bad_inputs_are_errors_naming_them(self):
        with pytest.raises(ValueError, match="gamma"):
            n_step_returns(jnp.ones((1, 3)), jnp.zeros((1, 3), bool), gamma=1.5)
        with pytest.raises(ValueError, match="dones"):
            n_step_returns(jnp.ones((1, 3)), jnp.zeros((1, 2), bool), gamma=0.9)


BIG = 50.0  # softmax([50, 0, 0]) is one-hot to float32 precision (e^-50 ≈ 2e-22)


class TestCategoricalDoubleQLoss:
    # N = 3 atoms on [-1, 1]: z = [-1, 0, 1]; A = 2 actions.
    #   online at s':  action 0 -> all mass on z = +1 (Q = 1), action 1 -> on z = −1: a* = 0.
    #   target at s':  action 0 -> all mass on z = −1,         action 1 -> on z = +1.
    # Double Q evaluates a* = 0 with the target net: the target is one-hot on z = −1, then shifted
    # by R + γ_R z. A max over the target net's own Q would pick action 1 (one-hot on z = +1).
    NEXT_ONLINE = jnp.array([[[0.0, 0.0, BIG], [BIG, 0.0, 0.0]]])
    NEXT_TARGET = jnp.array([[[BIG, 0.0, 0.0], [0.0, 0.0, BIG]]])
    LOGITS = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))

    def _loss(self, logits, returns=0.0, discounts=1.0, **kw):
        return categorical_double_q_loss(
            logits, self.NEXT_ONLINE, self.NEXT_TARGET, jnp.array([returns]), jnp.array([discounts]),
            v_min=-1.0, v_max=1.0, **kw,
        )

    def test_online_net_chooses_the_target_net_evaluates(self):
        # R = 0, γ_R = 1: target one-hot on z = −1 -> −log 0.5 (the target net's own argmax: −log 0.25).
        np.testing.assert_allclose(self._loss(self.LOGITS), [math.log(2.0)], rtol=1e-5)

    def test_target_is_projected(self):
        # R = 0.5, γ_R = 0.5: the atom −1 moves to 0.5 − 0.5 = 0 -> −log 0.25;
        # R = 0.25, γ_R = 0.5: to −0.25 -> a quarter on z = −1, three quarters on z = 0.
        np.testing.assert_allclose(self._loss(self.LOGITS, 0.5, 0.5), [math.log(4.0)], rtol=1e-5)
        expected = -(0.25 * math.log(0.5) + 0.75 * math.log(0.25))
        np.testing.assert_allclose(self._loss(self.LOGITS, 0.25, 0.5), [expected], rtol=1e-5)

    def test_terminal_target_is_the_reward(self):
        # γ_R = 0: every atom moves to R = 1 -> one-hot on z = +1 -> −log 0.25.
        np.testing.assert_allclose(self._loss(self.LOGITS, 1.0, 0.0), [math.log(4.0)], rtol=1e-5)

    def test_gradient_reaches_the_logits_only(self):
        # d/dlogits of −Σ m log softmax = softmax − m = [0.5 − 1, 0.25, 0.25].
        args = (self.LOGITS, self.NEXT_ONLINE, self.NEXT_TARGET, jnp.zeros(1), jnp.ones(1))
        loss = lambda *a: categorical_double_q_loss(*a, v_min=-1.0, v_max=1.0).sum()  # noqa: E731
        grads = jax.grad(loss, argnums=tuple(range(5)))(*args)
        np.testing.assert_allclose(grads[0], [[-0.5, 0.25, 0.25]], atol=1e-6)
        for g in grads[1:]:
            np.testing.assert_array_equal(g, jnp.zeros_like(g))

    def test_minimal_when_logits_match_the_target(self):
        # γ_R = 1, R = 0 keeps the atoms on the grid: the target is softmax(next_target[a*]) > 0.
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        next_online, next_target = jax.random.normal(k1, (2, 4, 3, 5))
        a_star = jnp.argmax(categorical_q_values(next_online, categorical_support(5, -2.0, 2.0)), axis=-1)
        target = jax.nn.softmax(next_target[jnp.arange(4), a_star])
        loss = functools.partial(
            categorical_double_q_loss, next_online_logits=next_online, next_target_logits=next_target,
            returns=jnp.zeros(4), discounts=jnp.ones(4), v_min=-2.0, v_max=2.0,
        )
        at_target = loss(jnp.log(target))
        np.testing.assert_allclose(at_target, -(target * jnp.log(target)).sum(-1), rtol=1e-5)  # the entropy
        for key in (k2, k3):
            assert bool(jnp.all(loss(jnp.log(target) + 0.3 * jax.random.normal(key, (4, 5))) > at_target))

    def test_under_jit_with_traced_support_equals_eager(self):
        jitted = jax.jit(lambda lo, hi: self._loss_with_range(lo, hi))(-1.0, 1.0)
        np.testing.assert_allclose(jitted, self._loss(self.LOGITS), rtol=1e-6)

    def _loss_with_range(self, v_min, v_max):
        return categorical_double_q_loss(
            self.LOGITS, self.NEXT_ONLINE, self.NEXT_TARGET, jnp.zeros(1), jnp.ones(1), v_min=v_min, v_max=v_max
        )

    @pytest.mark.parametrize(
        ("override", "name"),
        [
            ({"v_min": 1.0}, "v_min"),
            ({"next_target_logits": jnp.zeros((1, 3, 3))}, "next_target_logits"),
            ({"next_online_logits": jnp.zeros((1, 2, 4)), "next_target_logits": jnp.zeros((1, 2, 4))}, "next_online_logits"),
            ({"returns": jnp.zeros(2)}, "returns"),
            ({"discounts": jnp.zeros(2)}, "discounts"),
        ],
    )
    def test_bad_inputs_are_errors_naming_them(self, override, name):
        kwargs = {
            "next_online_logits": self.NEXT_ONLINE, "next_target_logits": self.NEXT_TARGET,
            "returns": jnp.zeros(1), "discounts": jnp.ones(1), "v_min": -1.0, "v_max": 1.0,
        }
        kwargs.update(override)
        with pytest.raises(ValueError, match=name):
            categorical_double_q_loss(self.LOGITS, **kwargs)


class TestSupportAndQValues:
    def test_support_golden_values(self):
        np.testing.assert_allclose(categorical_support(5, -10.0, 10.0), [-10.0, -5.0, 0.0, 5.0, 10.0])
        z = categorical_support(51, -10.0, 10.0)
        assert z.shape == (51,) and float(z[0]) == -10.0 and float(z[-1]) == 10.0

    def test_q_values_are_the_means(self):
        # [½, ½, 0] on [0, 1, 2] -> 0.5; one-hot on 2 -> 2; uniform -> 1.
        logits = jnp.log(jnp.array([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]]]))
        np.testing.assert_allclose(categorical_q_values(logits, Z3), [[0.5, 2.0, 1.0]], rtol=1e-6)

    @pytest.mark.parametrize(
        ("call", "name"),
        [
            (lambda: categorical_support(1, -1.0, 1.0), "num_atoms"),
            (lambda: categorical_support(5, 1.0, 1.0), "v_min"),
            (lambda: categorical_support(5, float("nan"), 1.0), "v_min"),
            (lambda: categorical_q_values(jnp.zeros((2, 4)), Z3), "support"),
        ],
    )
    def test_bad_inputs_are_errors_naming_them(self, call, name):
        with pytest.raises(ValueError, match=name):
            call()
