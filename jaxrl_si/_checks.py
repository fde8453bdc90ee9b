"""Trace-time argument checks shared by every public math function.

Shapes and dtypes are static under `jit`, so they are checked on every call (at trace time, for
free). Values (a probability in [0, 1], a positive beta) can only be checked when they are
concrete: a traced hyperparameter (e.g. one vmapped over a sweep) is not checked, because
checking it would need a host round trip or a recompilation per value. Every error names the
argument it is about, and is an `ArgumentError` (also a `TypeError` or `ValueError`), so that
`_contracts.contract` can tell it from any other failure.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


class ArgumentError(Exception):
    """An error that names the argument at fault: raised by these checks, caught by contracts."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A named argument of the wrong type or dtype."""


class ArgumentValueError(ArgumentError, ValueError):
    """A named argument of the wrong shape, rank or value."""


def is_concrete(value) -> bool:
    """True when `value` is a Python number or a concrete (non-traced) array."""
    return not isinstance(value, jax.core.Tracer)


def check_float_array(name: str, x, *, rank: int | None = None, min_rank: int | None = None):
    """Raise `TypeError`/`ValueError` unless `x` is a floating-point array of the given rank."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise ArgumentTypeError(f"`{name}` must be a floating-point array, got {type(x).__name__}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ArgumentTypeError(f"`{name}` must have a floating-point dtype, got {x.dtype}.")
    if rank is not None and x.ndim != rank:
        raise ArgumentValueError(f"`{name}` must have rank {rank}, got shape {tuple(x.shape)}.")
    if min_rank is not None and x.ndim < min_rank:
        raise ArgumentValueError(
            f"`{name}` must have rank >= {min_rank}, got shape {tuple(x.shape)}."
        )


def check_same_shape(named_arrays: Sequence[tuple[str, jax.Array]]):
    """Raise `ValueError` unless every array has the shape of the first one."""
    first_name, first = named_arrays[0]
    for name, x in named_arrays[1:]:
        if x.shape != first.shape:
            raise ArgumentValueError(
                f"`{name}` has shape {tuple(x.shape)} but `{first_name}` has shape "
                f"{tuple(first.shape)}; they must match."
            )


def check_float_arrays(named_arrays: Sequence[tuple[str, jax.Array]], *, rank: int):
    """Check dtype and rank of every array, then that all shapes agree."""
    for name, x in named_arrays:
        check_float_array(name, x, rank=rank)
    check_same_shape(named_arrays)


def check_flag_array(name: str, x, like_name: str, like) -> None:
    """Raise unless `x` is a bool or floating 0/1 array with the shape of `like`."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise ArgumentTypeError(
            f"`{name}` must be a bool or floating-point array, got {type(x).__name__}."
        )
    if not (x.dtype == jnp.bool_ or jnp.issubdtype(x.dtype, jnp.floating)):
        raise ArgumentTypeError(
            f"`{name}` must be bool or floating-point (0/1), got {x.dtype}; "
            f"use `{name}.astype(bool)`."
        )
    check_same_shape([(like_name, like), (name, x)])


def check_in_interval(
    name: str,
    value,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
):
    """Raise `ValueError` if a concrete scalar or array leaves the interval; skip traced values."""
    if not is_concrete(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    too_low = (arr <= low) if low_open else (arr < low)
    too_high = (arr >= high) if high_open else (arr > high)
    bad = too_low | too_high | np.isnan(arr)
    if np.any(bad):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        example = arr[bad].flat[0] if arr.ndim else float(arr)
        raise ArgumentValueError(
            f"`{name}` must lie in {left}{low}, {high}{right}, got {example!r}."
        )


def check_positive(name: str, value):
    """Raise `ValueError` unless a concrete `value` is > 0 (and finite)."""
    check_in_interval(name, value, 0.0, np.inf, low_open=True, high_open=True)


def check_scalar_hyperparameter(name: str, value):
    """Raise `ValueError` unless `value` is a scalar (Python number or 0-d array).

    A vector of hyperparameters is swept with `jax.vmap`, under which each call sees a scalar.
    """
    if np.ndim(value) != 0:
        raise ArgumentValueError(
            f"`{name}` must be a scalar, got shape {np.shape(value)}; "
            "to sweep several values, jax.vmap over it."
        )
