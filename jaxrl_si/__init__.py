"""jaxrl_si: a JAX-native research library for self-improving agents."""

from jaxrl_si import losses, preferences

__version__ = "0.1.0"

__all__ = ["losses", "preferences", "__version__"]
