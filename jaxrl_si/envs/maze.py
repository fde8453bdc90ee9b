r"""A point mass in a maze of walls: the JAX stand-in for D4RL's mazes, with exact temporal distances.

HILP (Park, Kreiman & Levine 2024, arXiv 2402.15567) learns φ so that ‖φ(s) − φ(g)‖ is the
temporal distance from s to g. On D4RL's AntMaze that distance is unknown; on this maze it is
known, so the representation can be checked against it.

The maze is a grid of unit cells, walls and free (`LAYOUTS`: D4RL's U-maze, medium and large
mazes, `d4rl/locomotion/maze_env.py`: `U_MAZE`, `BIG_MAZE`, `HARDEST_MAZE`). The state is the
point's position p = (x, y) in cell units, the centre of cell (row r, column c) being (c, r).
An action a ∈ [−1, 1]² moves it by `step_size`·a, first along x and then along y; a move
along one axis that would end in a wall cell is cancelled (the point slides along walls). The
observation is p (float32 `[2]`).

Tasks are the layout's (start cell, goal cell) pairs (`MazeLayout.tasks`: far-apart cells,
mostly D4RL's start R and goals G). `PointMaze(task=k)` starts near task k's start cell and pays reward
1 at every step that ends within `goal_radius` of its goal (the reward of "reach this region");
`info["success"]` says so
(`reset_to_task` does the same for a traced task index, so one program evaluates all tasks). Episodes never terminate (a `TimeLimit` truncates them), as in the
DMC tasks HILP prompts with rewards. Without a task (data collection) the point starts in a
uniformly drawn free cell (D4RL's "diverse" data starts anywhere) and the reward is 0.
Every step reports `info["features"]`, the rewards of all K tasks `[K]`, so a dataset keeps
every task's reward apart from what the learner reads.

`shortest_path_lengths` gives the true temporal structure: the number of cell moves between any
two free cells (breadth-first search). An action moves the point along both axes at once, so a
diagonal move costs one step as an axis move does (open space has the Chebyshev metric): the
env's `temporal_distance` counts 8-connected moves, a diagonal one only where both cells it
passes beside are free (no cutting a wall's corner); `diagonal=False` counts 4-connected moves.
"""

from __future__ import annotations

import collections
import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si.envs.core import Box, Env, TimeStep, initial_timestep, transition_timestep
from jaxrl_si.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MazeLayout:
    """Walls `[R, C]` (True: wall; the border is walls) and the tasks' (start, goal) cells as (row, column)."""

    name: str
    rows: tuple[str, ...]  # "#" wall, "." free, one string per row
    tasks: tuple[tuple[tuple[int, int], tuple[int, int]], ...]

    @property
    def walls(self) -> np.ndarray:
        return np.array([[ch == "#" for ch in row] for row in self.rows], bool)

    @property
    def free_cells(self) -> np.ndarray:
        """`[F, 2]` (row, column) of every free cell, row-major."""
        return np.argwhere(~self.walls).astype(np.int32)


def _layout(name: str, rows: str, starts_goals: tuple) -> MazeLayout:
    return MazeLayout(name, tuple(rows.split()), starts_goals)


# D4RL's layouts (R: the start, G: the goals of the multi-goal versions), walls as "#".
LAYOUTS = {
    layout.name: layout
    for layout in (
        _layout("umaze", "##### #...# ###.# #...# #####", (((1, 1), (3, 1)),)),
        _layout(
            "medium",
            "######## #..##..# #..#...# ##...### #..#...# #.#..#.# #...#..# ########",
            (((1, 1), (2, 6)), ((1, 1), (5, 1)), ((1, 1), (6, 5)), ((6, 6), (1, 1)), ((5, 1), (1, 6))),
        ),
        _layout(
            "large",
            "############ #....#.....# #.##.#.#.#.# #......#...# #.####.###.# #..#.#.....# "
            "##.#.#.#.### #..#...#...# ############",
            (((1, 1), (7, 9)), ((1, 1), (3, 10)), ((1, 1), (7, 4)), ((1, 1), (5, 2)), ((1, 1), (1, 6))),
        ),
    )
}


class MazeState(flax.struct.PyTreeNode):
    position: Float[Array, "2"]  # (x, y) in cell units
    task: Int[Array, ""]  # the task whose reward is paid; -1: none (data collection)


class PointMaze(Env):
    """The point-mass maze (module docstring). Pure and jittable; no time limit of its own."""

    def __init__(self, layout: str = "medium", *, task: int | None = None, step_size: float = 0.5, start_noise: float = 0.25, goal_radius: float = 0.5):
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown maze layout {layout!r}; choose one of {sorted(LAYOUTS)}")
        self.layout = LAYOUTS[layout]
        if task is not None and not (isinstance(task, int) and 0 <= task < len(self.layout.tasks)):
            raise ConfigError(f"maze {layout!r} has tasks 0..{len(self.layout.tasks) - 1}, got task={task!r}")
        if not 0.0 < step_size <= 0.5:
            raise ConfigError(f"step_size must be in (0, 0.5] cells (a step may not jump a wall), got {step_size}")
        if not 0.0 <= start_noise < 0.5 or not 0.0 < goal_radius:
            raise ConfigError(f"start_noise must be in [0, 0.5) and goal_radius > 0, got {start_noise}, {goal_radius}")
        self.task, self.step_size, self.start_noise, self.goal_radius = task, step_size, start_noise, goal_radius
        with jax.ensure_compile_time_eval():
            self._walls = jnp.asarray(self.layout.walls)
            self._free = jnp.asarray(self.layout.free_cells)
            self._goals = jnp.asarray(goal_positions(self.layout))  # [K, 2] (x, y)
            self._lengths = jnp.asarray(shortest_path_lengths(self.layout.walls))

    @property
    def observation_space(self) -> Box:
        height, width = self.layout.walls.shape
        return Box(np.zeros(2, np.float32), np.array([width - 1, height - 1], np.float32), (2,))

    @property
    def action_space(self) -> Box:
        return Box(-1.0, 1.0, (2,))

    @property
    def num_tasks(self) -> int:
        return len(self.layout.tasks)

    @property
    def goal_observations(self) -> Float[Array, "K 2"]:
        """The observation at each task's goal (its cell's centre): what a goal prompt is given."""
        return self._goals

    def temporal_distance(self, obs: Float[Array, "... 2"], goal: Float[Array, "... 2"]) -> Int[Array, "..."]:
        """Shortest-path cell moves, 8-connected, between the cells of `obs` and `goal` (`shortest_path_lengths`)."""
        a, b = cell_of(obs), cell_of(goal)
        return self._lengths[a[..., 0], a[..., 1], b[..., 0], b[..., 1]]

    def reset(self, key: PRNGKeyArray) -> tuple[MazeState, TimeStep]:
        if self.task is not None:
            return self.reset_to_task(key, jnp.asarray(self.task, jnp.int32))
        key_cell, key_noise = jax.random.split(key)
        cell = self._free[jax.random.randint(key_cell, (), 0, self._free.shape[0])]
        return self._start(key_noise, cell, jnp.asarray(-1, jnp.int32))

    def reset_to_task(self, key: PRNGKeyArray, task: Int[Array, ""]) -> tuple[MazeState, TimeStep]:
        """Start near `task`'s start cell and pay its reward (`task` may be traced, so one program
        evaluates every task)."""
        starts = jnp.asarray([start for start, _ in self.layout.tasks], jnp.int32)
        return self._start(key, starts[task], task)

    def _start(self, key: PRNGKeyArray, cell: Int[Array, "2"], task: Int[Array, ""]) -> tuple[MazeState, TimeStep]:
        noise = jax.random.uniform(key, (2,), minval=-self.start_noise, maxval=self.start_noise)
        state = MazeState(cell[::-1].astype(jnp.float32) + noise, task)
        return state, initial_timestep(state.position).replace(info=self._info(state))

    def step(self, state: MazeState, action: Array, key: PRNGKeyArray) -> tuple[MazeState, TimeStep]:
        del key
        state = state.replace(position=move(self._walls, state.position, self.step_size * jnp.clip(action, -1.0, 1.0)))
        info = self._info(state)
        reward = jnp.where(info["success"], 1.0, 0.0)
        return state, transition_timestep(state.position, reward, False, False).replace(info=info)

    def _info(self, state: MazeState) -> dict[str, Array]:
        """`features`: every task's reward `[K]`; `success`: inside the current task's goal region."""
        features = region_rewards(state.position, self._goals, self.goal_radius)
        return {"features": features, "success": (state.task >= 0) & (features[jnp.maximum(state.task, 0)] > 0)}

    def __repr__(self) -> str:
        return f"PointMaze({self.layout.name!r}, task={self.task}, step_size={self.step_size})"


def goal_positions(layout: MazeLayout) -> np.ndarray:
    """`[K, 2]` (x, y) centres of the tasks' goal cells."""
    return np.array([(goal[1], goal[0]) for _, goal in layout.tasks], np.float32)


def cell_of(position: Float[Array, "... 2"]) -> Int[Array, "... 2"]:
    """(row, column) of the cell holding each (x, y) position (cell c spans [c − ½, c + ½))."""
    return jnp.floor(position[..., ::-1] + 0.5).astype(jnp.int32)


def is_wall(walls: Array, position: Float[Array, "2"]) -> Array:
    """True where `position` lies in a wall cell or outside the grid."""
    row, column = cell_of(position)
    inside = (row >= 0) & (row < walls.shape[0]) & (column >= 0) & (column < walls.shape[1])
    return ~inside | walls[jnp.clip(row, 0, walls.shape[0] - 1), jnp.clip(column, 0, walls.shape[1] - 1)]


def move(walls: Array, position: Float[Array, "2"], displacement: Float[Array, "2"]) -> Float[Array, "2"]:
    """Move along x, then along y; each axis's move is cancelled if it would end in a wall."""
    for axis in range(2):
        moved = position.at[axis].add(displacement[axis])
        position = jnp.where(is_wall(walls, moved), position, moved)
    return position


def region_rewards(position: Float[Array, "2"], goals: Float[Array, "K 2"], radius: float) -> Float[Array, "K"]:
    """1 for each goal within `radius` of `position`, else 0."""
    return (jnp.linalg.norm(goals - position, axis=-1) <= radius).astype(jnp.float32)


def shortest_path_lengths(walls: np.ndarray, *, diagonal: bool = True) -> np.ndarray:
    """`[R, C, R, C]` int32: cell moves between free cells by breadth-first search (−1: a wall or
    unreachable); 8-connected with `diagonal` (a diagonal move only past two free cells), else 4."""
    height, width = walls.shape
    free = lambda r, c: 0 <= r < height and 0 <= c < width and not walls[r, c]  # noqa: E731
    moves = [(1, 0), (-1, 0), (0, 1), (0, -1)] + ([(1, 1), (1, -1), (-1, 1), (-1, -1)] if diagonal else [])
    lengths = np.full((height, width, height, width), -1, np.int32)
    for start in map(tuple, np.argwhere(~walls)):
        lengths[start][start] = 0
        queue = collections.deque([start])
        while queue:
            row, column = queue.popleft()
            for d_row, d_column in moves:
                nxt = (row + d_row, column + d_column)
                passable = free(row + d_row, column) and free(row, column + d_column)
                if free(*nxt) and passable and lengths[start][nxt] < 0:
                    lengths[start][nxt] = lengths[start][row, column] + 1
                    queue.append(nxt)
    return lengths
