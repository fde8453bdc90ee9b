"""Preference models and self-play rewards."""

from jaxrl_si.preferences.matrix_game import (
    bradley_terry_matrix,
    cyclic_preference_matrix,
    duality_gap,
    minimax_winner,
    win_probabilities,
)
from jaxrl_si.preferences.self_play import win_rates

__all__ = [
    "bradley_terry_matrix",
    "cyclic_preference_matrix",
    "duality_gap",
    "minimax_winner",
    "win_probabilities",
    "win_rates",
]
