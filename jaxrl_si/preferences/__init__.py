"""Preferences: oracles over trajectories, tasks with their presets, preference games, self-play rewards."""

from jaxrl_si.preferences.matrix_game import (
    bradley_terry_matrix,
    cyclic_preference_matrix,
    duality_gap,
    minimax_winner,
    win_probabilities,
)
from jaxrl_si.preferences.oracles import (
    ORACLE_TYPES,
    AnnotatorMixture,
    BradleyTerry,
    ConstrainedReturn,
    HardLabels,
    LabelFlip,
    MajorityVote,
    Oracle,
    Thurstone,
    Trajectories,
    cross_pairs,
    preference_matrix,
    preference_probability,
    sample_preference_matrix,
    sample_preferences,
)
from jaxrl_si.preferences.self_play import win_rates
from jaxrl_si.preferences.tasks import TASKS, PreferenceTask, task

__all__ = [
    "ORACLE_TYPES",
    "TASKS",
    "AnnotatorMixture",
    "BradleyTerry",
    "ConstrainedReturn",
    "HardLabels",
    "LabelFlip",
    "MajorityVote",
    "Oracle",
    "PreferenceTask",
    "Thurstone",
    "Trajectories",
    "bradley_terry_matrix",
    "cross_pairs",
    "cyclic_preference_matrix",
    "duality_gap",
    "minimax_winner",
    "preference_matrix",
    "preference_probability",
    "sample_preference_matrix",
    "sample_preferences",
    "task",
    "win_probabilities",
    "win_rates",
]
