"""Pure loss functions: per-example outputs, arrays positional, hyperparameters keyword-only."""

from jaxrl_si.losses.iql import awr_loss, awr_weights, expectile_loss, iql_critic_loss, iql_value_loss
from jaxrl_si.losses.policy_gradient import (
    categorical_entropy,
    clipped_value_loss,
    gaussian_entropy,
    grpo_advantages,
    grpo_loss,
    k3_kl,
    loop_advantages,
    loop_loss,
    normalize_advantages,
    ppo_clip_loss,
    reinforce_loss,
    rloo_advantages,
    value_loss,
)
from jaxrl_si.losses.preference import (
    bradley_terry_loss,
    cpl_loss,
    dpo_loss,
    inpo_loss,
    ipo_loss,
    preference_metrics,
    sppo_loss,
)
from jaxrl_si.losses.returns import gae_advantages, lambda_returns

__all__ = [
    "awr_loss",
    "awr_weights",
    "bradley_terry_loss",
    "categorical_entropy",
    "clipped_value_loss",
    "cpl_loss",
    "dpo_loss",
    "expectile_loss",
    "gae_advantages",
    "gaussian_entropy",
    "grpo_advantages",
    "grpo_loss",
    "inpo_loss",
    "ipo_loss",
    "iql_critic_loss",
    "iql_value_loss",
    "k3_kl",
    "lambda_returns",
    "loop_advantages",
    "loop_loss",
    "normalize_advantages",
    "ppo_clip_loss",
    "preference_metrics",
    "reinforce_loss",
    "rloo_advantages",
    "sppo_loss",
    "value_loss",
]
