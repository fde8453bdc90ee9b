"""Flax modules and action distributions."""

from jaxrl_si.nets.actor_critic import POLICY_KINDS, ActorCritic
from jaxrl_si.nets.distributions import Categorical, DiagGaussian, TanhGaussian
from jaxrl_si.nets.mlp import MLP, activation_by_name, flatten_observation
from jaxrl_si.nets.sampling import (
    Samples,
    SamplingConfig,
    filter_logits,
    sample,
    sample_naive,
    sequence_logps,
    self_certainty,
    sequence_scores,
    token_logps,
)
from jaxrl_si.nets.transformer import (
    CausalTransformer,
    KVCache,
    TransformerConfig,
    forward,
    init_cache,
    init_params,
    positions_from_valid,
)

__all__ = [
    "MLP",
    "POLICY_KINDS",
    "ActorCritic",
    "Categorical",
    "CausalTransformer",
    "DiagGaussian",
    "KVCache",
    "Samples",
    "SamplingConfig",
    "TanhGaussian",
    "TransformerConfig",
    "activation_by_name",
    "filter_logits",
    "flatten_observation",
    "forward",
    "init_cache",
    "init_params",
    "positions_from_valid",
    "sample",
    "sample_naive",
    "sequence_logps",
    "self_certainty",
    "sequence_scores",
    "token_logps",
]
