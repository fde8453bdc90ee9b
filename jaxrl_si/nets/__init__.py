"""Flax modules and action distributions."""

from jaxrl_si.nets.actor_critic import POLICY_KINDS, ActorCritic
from jaxrl_si.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from jaxrl_si.nets.mlp import MLP, activation_by_name, flatten_observation

__all__ = [
    "ActorCritic",
    "Categorical",
    "DiagGaussian",
    "MLP",
    "POLICY_KINDS",
    "TanhGaussian",
    "activation_by_name",
    "flatten_observation",
]
