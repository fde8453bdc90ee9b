"""Pure loss functions: per-example outputs, arrays positional, hyperparameters keyword-only."""

from jaxrl_si.losses.preference import (
    bradley_terry_loss,
    cpl_loss,
    dpo_loss,
    inpo_loss,
    ipo_loss,
    preference_metrics,
    sppo_loss,
)

__all__ = [
    "bradley_terry_loss",
    "cpl_loss",
    "dpo_loss",
    "inpo_loss",
    "ipo_loss",
    "preference_metrics",
    "sppo_loss",
]
