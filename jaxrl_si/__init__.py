"""jaxrl_si: a JAX-native research library for self-improving agents."""

from jaxrl_si import agents, envs, losses, nets, parallel, preferences

__version__ = "0.1.0"

__all__ = ["agents", "envs", "losses", "nets", "parallel", "preferences", "__version__"]
