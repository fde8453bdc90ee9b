"""jaxrl_si: a JAX-native research library for self-improving agents."""

from jaxrl_si import agents, checkpoint, envs, losses, loop, nets, parallel, preferences, sweep

__version__ = "0.1.0"

__all__ = ["agents", "checkpoint", "envs", "loop", "losses", "nets", "parallel", "preferences", "sweep", "__version__"]
