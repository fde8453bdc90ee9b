"""Runtime contracts: the jaxtyping annotations of the public math functions, checked per call.

`contract` checks every argument and the return value against its annotation: array type,
dtype class, rank, and the sizes of named dimensions shared between arguments (`B` in `[B]`
and `[B, T]` must agree). jaxtyping does the array checks; beartype, the type checker
jaxtyping recommends (it does not support typeguard >= 3), does the rest.

Under `jax.jit` and `jax.vmap` the check runs once per trace, on tracers (which are
`jax.Array`s with static shapes and dtypes), and never in the compiled program. Called eagerly it
runs on every call. `JAXTYPING_DISABLE=1` in the environment switches contracts off.

Annotation conventions: inputs are `ArrayLike` (a NumPy array is accepted, as by `jnp`),
outputs `Array`; a hyperparameter is a `RealScalar`.
"""

from __future__ import annotations

import functools
import typing

from beartype import BeartypeConf, beartype
from jaxtyping import ArrayLike, Real, TypeCheckError, jaxtyped

from jaxrl_si import _checks

RealScalar = Real[ArrayLike, ""]
"""A hyperparameter: a Python or NumPy number, or a 0-d real array (a tracer under jit/vmap).

An integer is allowed because a Python int passed through `jax.jit` arrives as an int32 tracer.
"""

# PEP 484's numeric tower: an int is acceptable wherever a float is annotated.
_TYPECHECKER = beartype(conf=BeartypeConf(is_pep484_tower=True))


def contract(fn):
    """Decorate a public math function so that its annotations are checked on every call.

    On a violation, `fn` itself is called unchecked: if its own checks (`_checks`) reject the
    call, that `ArgumentError` is raised, since it names the argument in one line; otherwise
    the contract found what those checks miss, and its `TypeCheckError` is raised.
    """
    # jaxtyping skips an annotation it cannot resolve without a word; fail at import instead.
    typing.get_type_hints(fn, include_extras=True)
    checked = jaxtyped(fn, typechecker=_TYPECHECKER)

    @functools.wraps(fn)
    def checked_call(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except TypeCheckError:
            named = _argument_error(fn, args, kwargs)
            if named is None:
                raise
            raise named from None

    return checked_call


def _argument_error(fn, args, kwargs) -> _checks.ArgumentError | None:
    """The `ArgumentError` that `fn`'s own checks raise on this call, or None."""
    try:
        fn(*args, **kwargs)
    except _checks.ArgumentError as error:
        return error
    except Exception:  # the body broke on what the contract found; the contract's message says why
        return None
    return None
