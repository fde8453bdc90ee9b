"""SPO (Swamy et al. 2024) against reward-model RLHF and PPO on the true reward: `python -m experiments.spo`."""
