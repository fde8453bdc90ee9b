"""Errors that mean "the user asked for something invalid", as opposed to a bug.

Command lines print these in one line on stderr and exit non-zero; anything else keeps its
traceback. `ConfigError` is a `ValueError`, so library callers may catch either.
"""


class ConfigError(ValueError):
    """An invalid setting: an unknown key or name, a size that does not divide, a malformed spec.

    The message names the setting and, where there are few, the valid choices.
    """
