"""Errors that mean "the user asked for something invalid", as opposed to a bug.

Command lines print these in one line on stderr and exit non-zero; anything else keeps its
traceback. `ConfigError` is a `ValueError`, so library callers may catch either.
"""


class ConfigError(ValueError):
    """An invalid setting: an unknown key or name, a size that does not divide, a malformed spec.

    The message names the setting and, where there are few, the valid choices.
    """


def check_known_keys(owner: str, keys, valid) -> None:
    """`ConfigError` naming the `keys` that are not `valid`, and the valid ones (a config's `from_dict`)."""
    valid = list(valid)
    if unknown := set(keys) - set(valid):
        raise ConfigError(f"unknown {owner} keys {sorted(unknown)}; valid keys: {sorted(valid)}")
