r"""Self-Predictive Representations: the SPR loss, its cosine metric, and the DrQ augmentations.

Schwarzer, Anand, Goel, Hjelm, Courville & Bachman 2021, "Data-Efficient Reinforcement Learning
with Self-Predictive Representations", arXiv 2007.05929. An online encoder and a transition
model predict, from s_t and a_t, …, a_{t+k-1}, the projections ŷ_{t+k} of the K future
observations; a target (momentum) encoder embeds the observed s_{t+k} as ỹ_{t+k}. Sec. 2.2:

.. math:: L^{SPR}_\theta(s_{t:t+K}, a_{t:t+K})
          = -\sum_{k=1}^{K} \Big(\frac{\tilde y_{t+k}}{\|\tilde y_{t+k}\|_2}\Big)^{\!\top}
            \frac{\hat y_{t+k}}{\|\hat y_{t+k}\|_2},

computed, as in the official code (mila-iqia/spr, `spr_loss`), as the squared distance of the
unit vectors, 2 − 2 cos (the same gradient direction, twice the scale), averaged over the K
steps with the steps after an episode's end masked out (`spr_loss`).

The augmentations (Sec. 2.3 and App. D; DrQ: Kostrikov, Yarats & Fergus 2020, arXiv 2004.13649)
are a random shift, ±`pad` pixels with edge (replicate) padding, then an intensity jitter:
`random_shift`, `intensity_jitter`, `augment`. Images are channels-last `[B, H, W, C]` floats
(convert uint8 frames first); each image of the batch draws its own shift and intensity factor.

Conventions as in `losses.iql`: arrays positional, hyperparameters keyword-only, per-example
outputs (callers reduce), targets gradient-stopped inside the loss; the annotations are
contracts (`jaxrl_si._contracts`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, Real

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract

_Mask = Bool[ArrayLike, "B K"] | Float[ArrayLike, "B K"]

# The norm is floored at this value, x / max(‖x‖, eps), so that a zero vector normalises to 0
# with finite gradients. The official code uses torch's F.normalize(eps=1e-3); the two agree on
# every vector of norm >= 1e-3.
_NORM_EPS = 1e-6


def _check_predictions_targets_mask(predictions, targets, mask) -> None:
    _checks.check_float_arrays([("predictions", predictions), ("targets", targets)], rank=3)
    like = jax.ShapeDtypeStruct(predictions.shape[:-1], predictions.dtype)
    _checks.check_flag_array("mask", mask, "predictions[..., 0]", like)


def _unit(x: Array) -> Array:
    """x / max(‖x‖₂, eps) along the last axis, in at least float32 (as the official `.float()`)."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    squared_norm = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, _NORM_EPS**2))


def _unit_pair(predictions, targets) -> tuple[Array, Array]:
    return _unit(jnp.asarray(predictions)), jax.lax.stop_gradient(_unit(jnp.asarray(targets)))


@contract
def spr_loss(
    predictions: Float[ArrayLike, "B K D"], targets: Float[ArrayLike, "B K D"], mask: _Mask
) -> Float[Array, "B"]:
    r"""The SPR loss (Sec. 2.2): normalised squared error of K predicted future latents, per example.

    .. math:: L_b = \frac{1}{K} \sum_{k=1}^{K} m_{b,k}\,
              \Big\| \frac{\hat y_{b,k}}{\|\hat y_{b,k}\|} - \frac{\tilde y_{b,k}}{\|\tilde y_{b,k}\|} \Big\|_2^2
              = \frac{1}{K} \sum_{k} m_{b,k}\, \big(2 - 2 \cos(\hat y_{b,k}, \tilde y_{b,k})\big).

    The paper's −Σ_k cos up to a constant and a factor 2, as the official code computes it. Masked
    steps (those at and after the episode's end, where the transition model has no observation to
    match) contribute 0, and the sum is divided by K all the same (the official code multiplies
    by the non-terminal mask, then takes the mean over the K steps). Norms are floored at 1e-6.

    Args:
      predictions: `[B, K, D]` ŷ, the online projections/predictions of steps t+1 … t+K.
      targets: `[B, K, D]` ỹ, the target encoder's projections of the observed s_{t+1 … t+K}
        (gradient-stopped here).
      mask: `[B, K]` bool or 0/1 float, 1 on steps still inside the episode.

    Returns:
      `[B]` per-example loss in [0, 4] (float32 or wider).

    >>> import jax.numpy as jnp
    >>> y = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])  # B = 1, K = 2, D = 2
    >>> spr_loss(y, jnp.array([[[0.0, 3.0], [5.0, 0.0]]]), jnp.ones((1, 2)))  # (2 + 0) / 2
    Array([1.], dtype=float32)
    """
    _check_predictions_targets_mask(predictions, targets, mask)
    unit_predictions, unit_targets = _unit_pair(predictions, targets)
    per_step = jnp.sum(jnp.square(unit_predictions - unit_targets), axis=-1)  # [B, K]
    return jnp.mean(jnp.asarray(mask).astype(per_step.dtype) * per_step, axis=-1)


@contract
def spr_cosine(
    predictions: Float[ArrayLike, "B K D"], targets: Float[ArrayLike, "B K D"], mask: _Mask
) -> Float[Array, "B"]:
    r"""Mean cosine similarity of predicted and target latents over the unmasked steps: a metric.

    .. math:: c_b = \frac{\sum_k m_{b,k} \cos(\hat y_{b,k}, \tilde y_{b,k})}{\max(\sum_k m_{b,k},\ 1)},

    0 for an example with every step masked. Where the mask has no zero, c = 1 − `spr_loss` / 2.

    Args:
      predictions, targets, mask: as in `spr_loss` (targets gradient-stopped here).

    Returns:
      `[B]` mean cosine in [-1, 1].

    >>> import jax.numpy as jnp
    >>> y = jnp.array([[[1.0, 0.0], [1.0, 0.0]]])
    >>> spr_cosine(y, jnp.array([[[-2.0, 0.0], [5.0, 0.0]]]), jnp.array([[True, False]]))
    Array([-1.], dtype=float32)
    """
    _check_predictions_targets_mask(predictions, targets, mask)
    unit_predictions, unit_targets = _unit_pair(predictions, targets)
    cosine = jnp.sum(unit_predictions * unit_targets, axis=-1)  # [B, K]
    mask = jnp.asarray(mask).astype(cosine.dtype)
    return jnp.sum(mask * cosine, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def _check_images(images, *, floating: bool) -> None:
    if floating:
        _checks.check_float_array("images", images, rank=4)
        return
    if not hasattr(images, "dtype") or not jnp.issubdtype(images.dtype, jnp.number):
        raise _checks.ArgumentTypeError(f"`images` must be a numeric array, got {getattr(images, 'dtype', type(images))}.")
    if images.ndim != 4:
        raise _checks.ArgumentValueError(f"`images` must have rank 4, [B, H, W, C], got shape {tuple(images.shape)}.")


def _check_pad(pad) -> None:
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise _checks.ArgumentTypeError(
            f"`pad` must be a Python int (static under jit: bind it with functools.partial), got {type(pad).__name__}."
        )
    if pad < 0:
        raise _checks.ArgumentValueError(f"`pad` must be >= 0, got {pad}.")


def _crop(image: Array, top_left: Array, height: int, width: int) -> Array:
    """The `[height, width, C]` window of `image` whose top-left corner is `top_left`."""
    return jax.lax.dynamic_slice(image, (top_left[0], top_left[1], 0), (height, width, image.shape[-1]))


@contract
def random_shift(key: PRNGKeyArray, images: Real[ArrayLike, "B H W C"], *, pad: int) -> Real[Array, "B H W C"]:
    r"""Shift each image by up to ±`pad` pixels: edge-pad, then crop back at a random offset.

    DrQ's image augmentation (Kostrikov et al. 2020, Sec. 3.1), used by SPR (App. D:
    replicate padding of 4 on 84×84 frames, as the official `ReplicationPad2d(4)` + `RandomCrop`):

    .. math:: x'_b = \operatorname{pad}_{edge}(x_b)[u_b : u_b + H,\ v_b : v_b + W],
              \qquad u_b, v_b \sim \mathcal U\{0, \dots, 2\,\text{pad}\}\ \text{independently per image}.

    One `lax.dynamic_slice` per image under `vmap`, so the cost is the padded copy and the crop.

    Args:
      key: a PRNG key.
      images: `[B, H, W, C]` channels-last images (any numeric dtype; floats in SPR).
      pad: the largest shift in pixels, a static Python int >= 0; 0 returns `images` unchanged.

    Returns:
      `[B, H, W, C]` shifted images, dtype of `images`.

    >>> import jax, jax.numpy as jnp
    >>> images = jnp.arange(4.0).reshape(1, 2, 2, 1)
    >>> shifted = random_shift(jax.random.key(0), images, pad=1)
    >>> shifted.shape, bool(jnp.all(random_shift(jax.random.key(0), images, pad=0) == images))
    ((1, 2, 2, 1), True)
    """
    _check_images(images, floating=False)
    _check_pad(pad)
    images = jnp.asarray(images)
    if pad == 0:
        return images
    batch, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    top_left = jax.random.randint(key, (batch, 2), 0, 2 * pad + 1)
    return jax.vmap(_crop, in_axes=(0, 0, None, None))(padded, top_left, height, width)


@contract
def intensity_jitter(
    key: PRNGKeyArray, images: Float[ArrayLike, "B H W C"], *, scale: RealScalar = 0.05
) -> Float[Array, "B H W C"]:
    r"""Scale each image's intensity by a random factor near 1 (SPR App. D, the official `Intensity`).

    .. math:: x'_b = x_b \cdot \big(1 + \sigma\, \operatorname{clip}(\epsilon_b, -2, 2)\big),
              \qquad \epsilon_b \sim \mathcal N(0, 1)\ \text{once per image},

    so the factor lies in [1 − 2σ, 1 + 2σ] ([0.9, 1.1] for SPR's σ = 0.05).

    Args:
      key: a PRNG key.
      images: `[B, H, W, C]` float images.
      scale: σ >= 0.

    Returns:
      `[B, H, W, C]` jittered images, dtype of `images`.

    >>> import jax, jax.numpy as jnp
    >>> out = intensity_jitter(jax.random.key(0), jnp.ones((3, 2, 2, 1)), scale=0.05)
    >>> bool(jnp.all((out >= 0.9) & (out <= 1.1)))
    True
    """
    _check_images(images, floating=True)
    _checks.check_scalar_hyperparameter("scale", scale)
    _checks.check_in_interval("scale", scale, 0.0, float("inf"), high_open=True)
    images = jnp.asarray(images)
    noise = jnp.clip(jax.random.normal(key, (images.shape[0], 1, 1, 1), dtype=images.dtype), -2.0, 2.0)
    return images * (1.0 + scale * noise).astype(images.dtype)


@contract
def augment(
    key: PRNGKeyArray, images: Float[ArrayLike, "B H W C"], *, pad: int, intensity_scale: RealScalar
) -> Float[Array, "B H W C"]:
    """SPR's augmentation: `random_shift` by ±`pad` pixels, then `intensity_jitter`, per image.

    Args:
      key: a PRNG key, split here into one for the shift and one for the intensity.
      images: `[B, H, W, C]` float images.
      pad: as in `random_shift` (SPR: 4).
      intensity_scale: σ of `intensity_jitter` (SPR: 0.05).

    Returns:
      `[B, H, W, C]` augmented images, dtype of `images`.

    >>> import jax, jax.numpy as jnp
    >>> augment(jax.random.key(0), jnp.ones((2, 8, 8, 3)), pad=4, intensity_scale=0.05).shape
    (2, 8, 8, 3)
    """
    _check_images(images, floating=True)
    _check_pad(pad)
    _checks.check_scalar_hyperparameter("intensity_scale", intensity_scale)
    _checks.check_in_interval("intensity_scale", intensity_scale, 0.0, float("inf"), high_open=True)
    shift_key, intensity_key = jax.random.split(key)
    shifted = random_shift(shift_key, images, pad=pad)
    return intensity_jitter(intensity_key, shifted, scale=intensity_scale)
