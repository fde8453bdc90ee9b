"""HILP's maths (`losses.hilbert`) on cases with exact answers, and the point maze it is checked on."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_si import envs
from jaxrl_si._checks import ArgumentError
from jaxrl_si.envs.maze import LAYOUTS, cell_of, shortest_path_lengths
from jaxrl_si.errors import ConfigError
from jaxrl_si.losses import (
    goal_latent,
    hilbert_value,
    hilbert_value_loss,
    intrinsic_reward,
    plan_subgoal,
    reward_latent,
    sample_latents,
)

CHAIN = 6  # states 0..5, one deterministic move i -> i + 1: temporal distance j - i to every goal j >= i
PAIRS = np.array([(i, j) for i in range(CHAIN - 1) for j in range(i, CHAIN)])  # (s, g), s with a successor


def _chain_loss(table, target, discount=1.0, expectile=0.5):
    """Mean `hilbert_value_loss` over every (s, g ≥ s) of the chain, twin tables `[2, N, d]`."""
    s, g = PAIRS[:, 0], PAIRS[:, 1]
    value = hilbert_value(table[:, s], table[:, g])
    target_value = hilbert_value(target[:, s], target[:, g])
    next_target = hilbert_value(target[:, s + 1], target[:, g])
    return hilbert_value_loss(value, target_value, next_target, (s == g).astype(jnp.float32), discount=discount, expectile=expectile).mean()


def test_the_exact_temporal_distance_is_a_fixed_point_of_the_loss():
    """φ(i) = (i, 0) gives V(s, g) = −(g − s) = −1 + V(s + 1, g) exactly: zero loss (up to the
    distance floor at s = g)."""
    exact = jnp.stack([jnp.stack([jnp.arange(CHAIN, dtype=jnp.float32), jnp.zeros(CHAIN)], -1)] * 2)
    assert float(_chain_loss(exact, exact)) < 1e-5
    shrunk = exact * 0.5
    assert float(_chain_loss(shrunk, shrunk)) > 0.1


def test_phi_learns_the_temporal_distances_of_a_chain():
    """Tabular twin φ in R², trained from random values by Adam on the loss with a Polyak target,
    recovers ‖φ(s) − φ(g)‖ = g − s on every pair to within 0.1."""
    table = jax.random.normal(jax.random.key(0), (2, CHAIN, 2))
    optimizer = optax.adam(3e-2)

    def step(carry, _):
        table, target, opt_state = carry
        grads = jax.grad(_chain_loss)(table, target)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(table, updates), 0.9 * target + 0.1 * table, opt_state), None

    (table, _, _), _ = jax.lax.scan(step, (table, table, optimizer.init(table)), None, length=3000)
    learned = -hilbert_value(table[0, PAIRS[:, 0]], table[0, PAIRS[:, 1]])
    np.testing.assert_allclose(learned, PAIRS[:, 1] - PAIRS[:, 0], atol=0.1)


def test_the_loss_weights_by_the_target_advantage_and_sums_the_heads():
    """One example by hand: r = −1, γ = 0.9; targets q_i = −1 + 0.9 V̄_i(s'), A = q_min-target − mean V̄(s)."""
    value, target, next_target = jnp.array([[-1.0], [-2.0]]), jnp.array([[-3.0], [-1.0]]), jnp.array([[-1.0], [-2.0]])
    loss = hilbert_value_loss(value, target, next_target, jnp.zeros(1), discount=0.9, expectile=0.8)
    advantage = -1 + 0.9 * -2.0 - (-2.0)  # -0.8 < 0: weight 1 - 0.8
    assert advantage < 0
    expected = 0.2 * ((-1 + 0.9 * -1.0 - -1.0) ** 2 + (-1 + 0.9 * -2.0 - -2.0) ** 2)
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)
    reached = hilbert_value_loss(value, target, next_target, jnp.ones(1), discount=0.9, expectile=0.8)
    np.testing.assert_allclose(reached, [0.8 * (1.0 + 4.0)], rtol=1e-6)  # q = 0, A = 2 > 0


def test_the_loss_refuses_bad_arguments():
    v = jnp.zeros((2, 3))
    with pytest.raises(ArgumentError, match="discount"):
        hilbert_value_loss(v, v, v, jnp.zeros(3), discount=1.5, expectile=0.9)
    with pytest.raises(ArgumentError, match="expectile"):
        hilbert_value_loss(v, v, v, jnp.zeros(3), discount=0.9, expectile=1.0)
    with pytest.raises((ArgumentError, TypeError)):
        hilbert_value_loss(jnp.zeros((3, 3)), jnp.zeros((3, 3)), jnp.zeros((3, 3)), jnp.zeros(3), discount=0.9, expectile=0.9)


def test_reward_regression_recovers_a_planted_latent():
    """r = ⟨f, z*⟩ exactly: the prompt is z* rescaled onto the sphere; with noise, close to it."""
    key_f, key_z, key_noise = jax.random.split(jax.random.key(1), 3)
    features = jax.random.normal(key_f, (500, 8))
    planted = jax.random.normal(key_z, (8,))
    direction = planted / jnp.linalg.norm(planted)
    np.testing.assert_allclose(reward_latent(features, features @ planted, radius=np.sqrt(8)), np.sqrt(8) * direction, atol=1e-4)
    noisy = features @ planted + 0.5 * jax.random.normal(key_noise, (500,))
    assert float(reward_latent(features, noisy) @ direction) > 0.99
    with pytest.raises(ArgumentError, match="at least as many samples"):
        reward_latent(features[:5], (features @ planted)[:5])


def test_goal_latents_and_intrinsic_rewards():
    phi_s, phi_g = jnp.array([[1.0, 1.0]]), jnp.array([[4.0, 5.0]])
    np.testing.assert_allclose(goal_latent(phi_s, phi_g), [[0.6, 0.8]], rtol=1e-6)
    z = goal_latent(phi_s, phi_g)
    np.testing.assert_allclose(intrinsic_reward(phi_s, phi_g, z), [5.0], rtol=1e-6)  # the whole distance, moved along z
    latents = sample_latents(jax.random.key(0), (100,), 16, radius=4.0)
    np.testing.assert_allclose(jnp.linalg.norm(latents, axis=-1), 4.0, rtol=1e-5)


def test_planning_picks_waypoints_on_the_latent_midpoint():
    """States on a line at 0, 1, ..., 10: from 0 to 10 the waypoint is 5, then 2 or 3 (ties)."""
    states = jnp.stack([jnp.arange(11.0), jnp.zeros(11)], -1)
    s, g = jnp.zeros(2), jnp.array([10.0, 0.0])
    np.testing.assert_allclose(plan_subgoal(s, g, states, num_neighbours=1, num_recursions=1), [5.0, 0.0])
    second = plan_subgoal(s, g, states, num_neighbours=1, num_recursions=2)
    assert float(second[0]) in (2.0, 3.0)
    np.testing.assert_allclose(plan_subgoal(s, g, states, num_neighbours=3, num_recursions=1), [5.0, 0.0])  # mean of 4, 5, 6
    np.testing.assert_allclose(plan_subgoal(s, g, states, num_neighbours=3, num_recursions=0), g)
    with pytest.raises(ArgumentError, match="num_neighbours"):
        plan_subgoal(s, g, states, num_neighbours=20, num_recursions=1)


def test_maze_walls_block_and_the_point_slides_along_them():
    env = envs.make("maze:umaze", episode_length=None)  # free: row 1 cols 1-3, (2, 3), row 3 cols 1-3
    state, ts = env.reset_to_task(jax.random.key(0), jnp.asarray(0))
    state = state.replace(position=jnp.array([1.0, 1.0]))  # cell (1, 1); (2, 1) below is a wall
    state, ts = env.step(state, jnp.array([1.0, 1.0]), jax.random.key(1))
    np.testing.assert_allclose(ts.obs, [1.5, 1.0])  # x moved, y blocked
    for _ in range(10):
        state, ts = env.step(state, jnp.array([1.0, 0.0]), jax.random.key(1))
    np.testing.assert_allclose(ts.obs, [3.0, 1.0])  # stopped at the last free cell before the wall
    state = state.replace(position=jnp.array([3.0, 2.0]))  # in the corridor, cell (2, 3): walls left and right
    state, ts = env.step(state, jnp.array([-1.0, 0.0]), jax.random.key(1))
    np.testing.assert_allclose(ts.obs, [2.5, 2.0])  # x = 2.5 is still cell 3 (cells span [c - 1/2, c + 1/2))
    state, ts = env.step(state, jnp.array([-1.0, 0.0]), jax.random.key(1))
    np.testing.assert_allclose(ts.obs, [2.5, 2.0])  # 2.0 would be the wall cell (2, 2)
    for _ in range(2):
        state, ts = env.step(state, jnp.array([0.0, 1.0]), jax.random.key(1))
    np.testing.assert_allclose(ts.obs, [2.5, 3.0])
    for _ in range(8):
        state, ts = env.step(state, jnp.array([-1.0, 0.0]), jax.random.key(1))
    assert bool(ts.info["success"]) and float(ts.reward) == 1.0  # task 0's goal: cell (3, 1)
    assert ts.info["features"].shape == (env.num_tasks,)


def test_maze_shortest_paths_and_resets():
    lengths = shortest_path_lengths(LAYOUTS["umaze"].walls, diagonal=False)
    assert lengths[1, 1, 3, 1] == 6 and lengths[1, 1, 1, 1] == 0 and lengths[0, 0, 1, 1] == -1
    assert lengths[3, 1, 1, 1] == 6  # symmetric
    medium = shortest_path_lengths(LAYOUTS["medium"].walls)  # 8-connected, corners not cut
    assert medium[1, 1, 2, 2] == 1 and medium[1, 2, 2, 1] == 1  # open diagonals: one move
    assert medium[2, 2, 3, 3] == 2 and medium[3, 4, 4, 5] == 2  # (2, 3) / (3, 5) are walls: no cutting their corners
    medium = envs.make("maze:medium", episode_length=None)
    states, ts = jax.vmap(medium.reset)(jax.random.split(jax.random.key(0), 256))
    cells = np.asarray(cell_of(ts.obs))
    assert not LAYOUTS["medium"].walls[cells[:, 0], cells[:, 1]].any()  # data resets land on free cells
    assert len({tuple(c) for c in cells}) > 20  # ... all over the maze
    assert np.all(np.asarray(states.task) == -1) and float(jnp.abs(ts.reward).sum()) == 0.0
    with pytest.raises(ConfigError, match="task"):
        envs.make("maze:medium", task=9)
    with pytest.raises(ConfigError, match="layout"):
        envs.make("maze:tiny")
