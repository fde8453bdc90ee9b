"""Sequence tasks with checkable answers, their verifiers and preference oracles over responses."""

from jaxrl_si.sequence.judges import (
    FEATURE_NAMES,
    RESPONSE_ORACLES,
    as_trajectories,
    digit_accuracy,
    exact_match,
    response_features,
    response_oracle,
    response_preference_matrix,
    response_trajectories,
    response_win_rates,
)
from jaxrl_si.sequence.tasks import (
    TASKS,
    VOCAB,
    AdditionTask,
    Problems,
    SortTask,
    Task,
    Vocabulary,
    digit_tokens,
    make_task,
    supervised_targets,
)

__all__ = [
    "FEATURE_NAMES",
    "RESPONSE_ORACLES",
    "TASKS",
    "VOCAB",
    "AdditionTask",
    "Problems",
    "SortTask",
    "Task",
    "Vocabulary",
    "as_trajectories",
    "digit_accuracy",
    "digit_tokens",
    "exact_match",
    "make_task",
    "response_features",
    "response_oracle",
    "response_preference_matrix",
    "response_trajectories",
    "response_win_rates",
    "supervised_targets",
]
