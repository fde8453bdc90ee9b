"""Iterative self-improvement of a small transformer by its own samples (`python -m experiments.self_improve`)."""
