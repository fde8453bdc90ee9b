"""Agents: one module an algorithm, each `init` + `update` on an immutable state pytree."""

from jaxrl_si.agents import ppo

__all__ = ["ppo"]
