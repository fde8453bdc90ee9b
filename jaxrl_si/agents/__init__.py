"""Agents: one module an algorithm, each a frozen agent with pure `init` / `update` (see README.md)."""

from jaxrl_si.agents import ppo

__all__ = ["ppo"]
