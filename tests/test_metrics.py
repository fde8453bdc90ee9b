"""Run statistics (one episode-weighted mean, on host and device) and the metric row schema."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import metrics
from jaxrl_si.sinks import ROW_LABELS, metric_row

# 3 members x 4 updates: mean return of the episodes that ended in each update, and how many did.
RETURNS = np.array([[10.0, np.nan, 30.0, 20.0], [1.0, 2.0, 3.0, 4.0], [np.nan, np.nan, np.nan, 5.0]], np.float32)
COUNTS = np.array([[1, 0, 3, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)


def test_episode_mean_weights_by_count_and_is_nan_without_episodes():
    # member 0: (10 + 90 + 20) / 5 = 24; member 1: 10 / 4 = 2.5; member 2: no episode ended (its 5.0 has count 0).
    np.testing.assert_allclose(metrics.episode_mean(RETURNS, COUNTS, axis=1), [24.0, 2.5, np.nan])


def test_episode_mean_is_the_same_on_device_with_done_flags():
    """Inside an update the counts are a step's bool `done`: the jnp result equals numpy's."""
    done = np.array([[True, False, True], [False, False, True]])
    returns = np.array([[7.0, 99.0, 3.0], [-1.0, 42.0, 5.0]], np.float32)  # ignored where not done
    on_device = metrics.episode_mean(jnp.asarray(returns), jnp.asarray(done))
    assert isinstance(on_device, jnp.ndarray) and float(on_device) == pytest.approx(5.0)
    assert float(metrics.episode_mean(returns, done)) == float(on_device)
    assert np.isnan(float(metrics.episode_mean(jnp.asarray(returns), jnp.zeros_like(jnp.asarray(done)))))


def test_windows_and_iterations_are_episode_means_of_blocks():
    smoothed = metrics.smoothed_episode_return(RETURNS, COUNTS, window=2)
    np.testing.assert_allclose(smoothed[:, -1], metrics.final_episode_return(RETURNS, COUNTS, 2))
    np.testing.assert_allclose(smoothed[0], [10.0, 10.0, 30.0, (90 + 20) / 4])
    per_iteration = metrics.iteration_returns(RETURNS, COUNTS, updates_per_iteration=2)
    expected = [[metrics.episode_mean(RETURNS[m, i : i + 2], COUNTS[m, i : i + 2]) for i in (0, 2)] for m in range(3)]
    np.testing.assert_allclose(per_iteration, expected)


def test_uncounted_returns_weigh_each_finite_update_once():
    returns, counts = metrics.returns_and_counts({"score": RETURNS}, "score", None)
    assert returns is RETURNS and counts.tolist() == np.isfinite(RETURNS).astype(np.float32).tolist()
    assert np.isnan(metrics.mean_of_finite(np.array([np.nan]))) and metrics.mean_of_finite(np.array([1.0, np.nan, 3.0])) == 2.0


def test_metric_rows_put_labels_first_in_schema_order():
    row = metric_row({"env_steps": 64, "member": 1, "update": 2}, {"loss/value": 0.5})
    assert list(row) == ["member", "update", "env_steps", "loss/value"]
    assert set(ROW_LABELS) >= {"member", "setting", "seed", "iteration", "update", "env_steps"}
    with pytest.raises(ValueError, match="include env_steps"):
        metric_row({"member": 1}, {})
    with pytest.raises(ValueError, match="must be among"):
        metric_row({"env_steps": 1, "run": 3}, {})
    with pytest.raises(ValueError, match=r"clash with row labels"):
        metric_row({"env_steps": 1}, {"seed": 0.0})
