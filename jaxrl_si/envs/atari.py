"""Atari 100k environments on ale-py's vector env (host-side NumPy, not jittable).

The protocol of Kaiser et al. (2020) as SPR (Schwarzer et al., 2021) ran it: 26 games, action
repeat 4 with a max over the last two frames, grey 84x84, 4 stacked frames, rewards clipped to
their sign and a terminal on every life loss for the learner, at most 27,000 agent steps
(108,000 frames) a game, up to 30 no-ops at reset, no sticky actions. Evaluation (`evaluate`) plays
full games: no life-loss terminal, unclipped scores.

What ale-py 0.12.1's `ale_py.vector_env.AtariVectorEnv` does (read in its source, probed here):
- Observations `(N, stack, 84, 84)` uint8, oldest frame first, newest last; after a reset the
  older slots are zeros. `AtariEnvs` returns them channels-last `[N, 84, 84, stack]`.
- Auto-reset: the default `autoreset_mode="NextStep"` reports the end, then spends the NEXT
  `step` on the reset (the action is ignored, reward 0): an observation-less transition a
  learner must skip. `AtariEnvs` uses `"SameStep"`: the step that ends a game already returns
  the next game's first observation, and `info["final_obs"]` (full batch, valid only for the
  envs that ended) the one the game ended on. There is no "Disabled" mode in 0.12.1.
- Life loss: `episodic_life=True` RESETS THE WHOLE GAME on every life loss (measured on
  Breakout: lives back to 5, episode frame counter restarted): wrong for the protocol.
  `life_loss_info=True` keeps the game going but reports the loss as `terminated`, so it cannot
  be told apart from game over. `AtariEnvs` turns both off and compares `info["lives"]`
  itself: the game continues, only `HostStep.terminal` is set. As in SPR's code (rlpyt env) a
  life counts as lost when `lives` decreases and stays > 0 (the last life ends the game), and the
  frame stack is zeroed after it (SPR zeroes it; dopamine starts a new agent episode), so a
  learner's stack never straddles a terminal.
- Time limit: `max_num_frames_per_episode` counts the frames of agent steps, not the reset
  no-ops (measured: a 40-frame limit at frameskip 4 truncates after exactly 10 steps, whatever the
  no-op count), so `max_episode_steps * frame_skip` gives exactly `max_episode_steps` steps.
  A truncated game is reported `truncated` (and `episode_end`), never `terminal`. SPR's rlpyt
  env treats the limit as done; to do the same, use `terminal | truncated`.
- Actions: the minimal action set unless `full_action_space=True` (Pong 6, Breakout 4).
- Rewards: `reward_clipping=True` by default; it is turned off so that episode scores are the
  game's own; `AtariEnvs` clips a copy when `clip_rewards`.
- `use_fire_reset=True` by default (presses FIRE after each reset); neither SPR's env nor
  dopamine does, so `fire_reset` defaults to False. `noop_max=30` and `maxpool=True` match.
- Speed (Pong, random actions, 8 envs, 2 CPU cores shared with other jobs): 1.8-2.8k env
  steps/s through `AtariEnvs`, 2.3-3.5k from the bare vector env in the same minutes (up to
  5.5k when the machine was quiet); `num_threads=1` was slower than the default.

Random and human scores: google-research/rliable, `deep_rl_precipice_colab.ipynb` ("Score data
for Human and random agent"), the values used by SPR, DrQ(eps) and the rliable paper; identical to
`atari_random_scores` / `atari_human_scores` in SPR's official code (mila-iqia/spr,
`src/rlpyt_utils.py`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable

import numpy as np

from jaxrl_si.envs.core import import_backend
from jaxrl_si.errors import ConfigError

# The 26 games of Atari 100k, as the papers name them, and their ale-py ROM ids.
ATARI_100K_GAMES: dict[str, str] = {
    "Alien": "alien",
    "Amidar": "amidar",
    "Assault": "assault",
    "Asterix": "asterix",
    "BankHeist": "bank_heist",
    "BattleZone": "battle_zone",
    "Boxing": "boxing",
    "Breakout": "breakout",
    "ChopperCommand": "chopper_command",
    "CrazyClimber": "crazy_climber",
    "DemonAttack": "demon_attack",
    "Freeway": "freeway",
    "Frostbite": "frostbite",
    "Gopher": "gopher",
    "Hero": "hero",
    "Jamesbond": "jamesbond",
    "Kangaroo": "kangaroo",
    "Krull": "krull",
    "KungFuMaster": "kung_fu_master",
    "MsPacman": "ms_pacman",
    "Pong": "pong",
    "PrivateEye": "private_eye",
    "Qbert": "qbert",
    "RoadRunner": "road_runner",
    "Seaquest": "seaquest",
    "UpNDown": "up_n_down",
}

# Random-agent and average-human scores (source: module docstring).
RANDOM_SCORES: dict[str, float] = {
    "Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "BankHeist": 14.2,
    "BattleZone": 2360.0, "Boxing": 0.1, "Breakout": 1.7, "ChopperCommand": 811.0,
    "CrazyClimber": 10780.5, "DemonAttack": 152.1, "Freeway": 0.0, "Frostbite": 65.2,
    "Gopher": 257.6, "Hero": 1027.0, "Jamesbond": 29.0, "Kangaroo": 52.0, "Krull": 1598.0,
    "KungFuMaster": 258.5, "MsPacman": 307.3, "Pong": -20.7, "PrivateEye": 24.9,
    "Qbert": 163.9, "RoadRunner": 11.5, "Seaquest": 68.4, "UpNDown": 533.4,
}  # fmt: skip
HUMAN_SCORES: dict[str, float] = {
    "Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "BankHeist": 753.1,
    "BattleZone": 37187.5, "Boxing": 12.1, "Breakout": 30.5, "ChopperCommand": 7387.8,
    "CrazyClimber": 35829.4, "DemonAttack": 1971.0, "Freeway": 29.6, "Frostbite": 4334.7,
    "Gopher": 2412.5, "Hero": 30826.4, "Jamesbond": 302.8, "Kangaroo": 3035.0, "Krull": 2665.5,
    "KungFuMaster": 22736.3, "MsPacman": 6951.6, "Pong": 14.6, "PrivateEye": 69571.3,
    "Qbert": 13455.0, "RoadRunner": 7845.0, "Seaquest": 42054.7, "UpNDown": 11693.2,
}  # fmt: skip

_ROM_TO_GAME = {rom: game for game, rom in ATARI_100K_GAMES.items()}


def atari_100k_game(name: str) -> str:
    """The paper's name of one of the 26 games, given it or its ROM id; `ConfigError` otherwise."""
    if name in ATARI_100K_GAMES:
        return name
    if name in _ROM_TO_GAME:
        return _ROM_TO_GAME[name]
    close = difflib.get_close_matches(name, [*ATARI_100K_GAMES, *_ROM_TO_GAME], n=5)
    raise ConfigError(f"{name!r} is not one of the 26 Atari 100k games; close matches: {close}")


def human_normalized_score(game: str, score):
    """`(score - random) / (human - random)`: 0 for the random agent, 1 for the average human.

    `game` is one of `ATARI_100K_GAMES` (paper name or ROM id); `score` a number or an array of
    any shape (a float or a float64 array comes back).

    >>> round(human_normalized_score("Pong", -3.05), 6)  # halfway from -20.7 (random) to 14.6 (human)
    0.5
    """
    game = atari_100k_game(game)
    random, human = RANDOM_SCORES[game], HUMAN_SCORES[game]
    hns = (np.asarray(score, np.float64) - random) / (human - random)
    return float(hns) if hns.ndim == 0 else hns


def rom_id(game: str) -> str:
    """The ale-py ROM id for `game`: a paper name of the 26, a ROM id, or a CamelCase ROM name.

    Raises `ConfigError` listing close matches when ale-py ships no such ROM.
    """
    if game in ATARI_100K_GAMES:
        return ATARI_100K_GAMES[game]
    roms = import_backend("ale_py.roms", backend="Atari", extra="atari")
    known = roms.get_all_rom_ids()
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower()
    for candidate in (game, snake):
        if candidate in known:
            return candidate
    close = difflib.get_close_matches(game, [*ATARI_100K_GAMES, *known], n=5)
    close += [g for g in difflib.get_close_matches(snake, known, n=3) if g not in close]
    raise ConfigError(f"AtariConfig.game: unknown Atari game {game!r}; close matches: {close}")


@dataclasses.dataclass(frozen=True)
class AtariConfig:
    """The Atari 100k environment settings; defaults are the training protocol."""

    game: str  # one of the 26 (paper name) or any ale-py ROM id ("pong", "space_invaders")
    num_envs: int = 1  # games stepped together in one batch
    frame_skip: int = 4  # action repeat; the observation is the max of the last two frames
    stack: int = 4  # frames stacked in an observation, newest last
    noop_max: int = 30  # a reset plays a random number (up to noop_max) of NOOPs, drawn by ale-py
    terminal_on_life_loss: bool = True  # `terminal` on a life loss (training); the game goes on
    clip_rewards: bool = True  # `reward` = sign(game reward); `episode_score` stays unclipped
    max_episode_steps: int = 27_000  # agent steps a game (27k = 108k frames): then truncated
    repeat_action_probability: float = 0.0  # sticky actions; the protocol has none
    fire_reset: bool = False  # press FIRE after each reset (ale-py's default; not the protocol)
    seed: int = 0  # env i is seeded with seed + i at the first reset
    num_threads: int = 0  # ale-py worker threads; 0 lets ale-py choose

    def __post_init__(self):
        if not isinstance(self.game, str):
            raise ConfigError(f"AtariConfig.game must be a str, got {self.game!r}")
        if self.game not in ATARI_100K_GAMES:
            rom_id(self.game)  # ConfigError naming the game unless ale-py ships it
        for name in ("num_envs", "frame_skip", "stack", "max_episode_steps"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("noop_max", "seed", "num_threads"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("terminal_on_life_loss", "clip_rewards", "fire_reset"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"AtariConfig.{name} must be a bool, got {getattr(self, name)!r}")
        p = self.repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"AtariConfig.repeat_action_probability must be in [0, 1], got {p!r}")


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"AtariConfig.{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class HostStep:
    """What `AtariEnvs.step` returns: NumPy arrays with a leading `[N]` env axis."""

    obs: np.ndarray  # [N, 84, 84, stack] uint8: the observation to act on next (a new game's first after episode_end)
    reward: np.ndarray  # [N] float32: the step's reward, sign-clipped if clip_rewards
    terminal: np.ndarray  # [N] bool: the learner's terminal (game over, or a life loss if terminal_on_life_loss)
    episode_end: np.ndarray  # [N] bool: the game ended (game over or time limit): episode_score is final
    episode_score: np.ndarray  # [N] float32: unclipped score of the game that just ended; NaN where not episode_end
    truncated: np.ndarray  # [N] bool: the time limit ended a game that was not over (never with terminal game over)
    final_obs: np.ndarray  # [N, 84, 84, stack] uint8: the observation the step reached, before any reset or
    # zeroing; the same array as `obs` when no env needed either (treat both as read-only)


class AtariEnvs:
    """`num_envs` Atari games stepped in one batch by ale-py; see the module docstring.

    >>> envs = AtariEnvs(AtariConfig("Pong", num_envs=2))
    >>> envs.reset().shape, envs.num_actions
    ((2, 84, 84, 4), 6)
    >>> step = envs.step(np.zeros(2, np.int32))
    >>> step.obs.shape, step.terminal, step.episode_end
    ((2, 84, 84, 4), array([False, False]), array([False, False]))
    >>> envs.close()
    """

    def __init__(self, config: AtariConfig):
        if not isinstance(config, AtariConfig):
            raise TypeError(f"`config` must be an AtariConfig, got {type(config).__name__}")
        vector_env = import_backend("ale_py.vector_env", backend="Atari", extra="atari")
        self.config = config
        self._env = vector_env.AtariVectorEnv(
            rom_id(config.game),
            config.num_envs,
            num_threads=config.num_threads,
            max_num_frames_per_episode=config.max_episode_steps * config.frame_skip,
            repeat_action_probability=float(config.repeat_action_probability),
            full_action_space=False,
            autoreset_mode="SameStep",
            stack_num=config.stack,
            frameskip=config.frame_skip,
            noop_max=config.noop_max,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            use_fire_reset=config.fire_reset,
        )
        n = config.num_envs
        self._lives = np.zeros(n, np.int64)
        self._score = np.zeros(n, np.float64)
        self._age = np.zeros(n, np.int64)  # steps since the current life (or game) began
        self._after_life_loss = np.zeros(n, bool)  # the current life began with a life loss
        self._seeded = False

    @property
    def num_envs(self) -> int:
        return self.config.num_envs

    @property
    def num_actions(self) -> int:
        """The size of the game's minimal action set."""
        return int(self._env.single_action_space.n)

    @property
    def lives(self) -> np.ndarray:
        """`[N]` lives left in each env's game (0 throughout for games without lives, e.g. Pong)."""
        return self._lives.copy()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new game in every env: observations `[N, 84, 84, stack]` uint8.

        `seed` seeds env i with `seed + i`; by default the first reset uses `config.seed` and
        later ones continue each env's random stream.
        """
        if seed is None and not self._seeded:
            seed = self.config.seed
        obs, info = self._env.reset(seed=None if seed is None else int(seed))
        self._seeded = True
        self._lives = info["lives"].astype(np.int64)
        self._score[:] = 0.0
        self._age[:] = 0
        self._after_life_loss[:] = False
        return _channels_last(obs)

    def step(self, actions) -> HostStep:
        """Apply `actions` `[N]` (ints in `[0, num_actions)`) to every env; see `HostStep`."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be ints of shape ({self.num_envs},), got {actions.dtype} {actions.shape}")
        if actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions}")
        obs, raw_reward, game_over, time_limit, info = self._env.step(actions.astype(np.int32))
        game_over = np.asarray(game_over, bool)
        truncated = np.asarray(time_limit, bool) & ~game_over
        episode_end = game_over | truncated
        lives = info["lives"].astype(np.int64)
        # After an auto-reset `lives` is the new game's: only games that go on can lose a life.
        life_lost = ~episode_end & (lives < self._lives) & (lives > 0)
        self._lives = lives

        self._score += raw_reward
        episode_score = np.where(episode_end, self._score, np.nan).astype(np.float32)
        self._score[episode_end] = 0.0

        next_obs, final_obs = self._observations(obs, info, episode_end)
        if self.config.terminal_on_life_loss:
            terminal = game_over | life_lost
            stale = self._stale_frames(life_lost, episode_end)
            if stale.any():
                next_obs = next_obs.copy() if next_obs is final_obs else next_obs
                for i in np.flatnonzero(stale):
                    next_obs[i, ..., : stale[i]] = 0
        else:
            terminal = game_over
        reward = raw_reward.astype(np.float32)
        if self.config.clip_rewards:
            reward = np.sign(reward)
        return HostStep(
            obs=next_obs,
            reward=reward,
            terminal=terminal,
            episode_end=episode_end,
            episode_score=episode_score,
            truncated=truncated,
            final_obs=final_obs,
        )

    def _observations(self, obs: np.ndarray, info, episode_end: np.ndarray):
        """`(next_obs, final_obs)` channels-last from ale-py's `obs` and `info["final_obs"]`."""
        if not episode_end.any():
            final_obs = _channels_last(obs)
            return final_obs, final_obs
        final_cf = obs.copy()
        final_cf[episode_end] = info["final_obs"][episode_end]
        return _channels_last(obs), _channels_last(final_cf)

    def _stale_frames(self, life_lost: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """`[N]`: how many of the oldest stacked frames predate the life the env is playing.

        ale-py zeroes the stack after a reset only; after a life loss it still holds frames of
        the life before, which a learner that treats the loss as terminal must not see.
        """
        self._age = np.where(life_lost | episode_end, 0, self._age + 1)
        self._after_life_loss = np.where(life_lost, True, self._after_life_loss & ~episode_end)
        return np.where(self._after_life_loss, np.maximum(self.config.stack - 1 - self._age, 0), 0)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> AtariEnvs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AtariEnvs({self.config.game!r}, num_envs={self.num_envs})"


def _channels_last(obs: np.ndarray) -> np.ndarray:
    """`[N, stack, H, W]` -> contiguous `[N, H, W, stack]`, newest frame last."""
    out = np.empty((obs.shape[0], *obs.shape[2:], obs.shape[1]), obs.dtype)
    for k in range(obs.shape[1]):  # a slot at a time: 4x faster than one strided transpose copy
        out[..., k] = obs[:, k]
    return out


def evaluate(
    config: AtariConfig,
    act: Callable[[np.ndarray], np.ndarray],
    *,
    num_episodes: int,
    max_steps: int | None = None,
) -> np.ndarray:
    """Scores `[num_episodes]` (float64) of full games played by `act`, unclipped.

    The games are the protocol's evaluation games: `config` with no life-loss terminal and no
    reward clipping, at most `max_steps` agent steps each (default `config.max_episode_steps`,
    27k = 108k frames; a game cut there counts with its score so far). `act(obs [N, 84, 84,
    stack] uint8) -> actions [N]` is the caller's policy, epsilon-greedy included (0.001 in the
    protocol). `min(config.num_envs, num_episodes)` games run in a batch.

    Unbiased sample: stopping once `num_episodes` games have ended, whichever env ended them,
    over-samples short games. Instead env i is given a quota fixed in advance
    (`num_episodes // N`, plus one for the first `num_episodes % N` envs) and only its first
    quota games count; games it starts after that are played out for the batch but discarded.
    Scores come back env by env, in order.
    """
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, (int, np.integer)) or num_episodes < 1:
        raise ConfigError(f"evaluate: num_episodes must be a positive int, got {num_episodes!r}")
    if max_steps is not None:
        _check_int("max_episode_steps (evaluate's max_steps)", max_steps, minimum=1)
    eval_config = dataclasses.replace(
        config,
        num_envs=min(config.num_envs, int(num_episodes)),
        terminal_on_life_loss=False,
        clip_rewards=False,
        max_episode_steps=config.max_episode_steps if max_steps is None else int(max_steps),
    )
    n = eval_config.num_envs
    quota = np.full(n, num_episodes // n)
    quota[: num_episodes % n] += 1
    scores: list[list[float]] = [[] for _ in range(n)]
    with AtariEnvs(eval_config) as envs:
        obs = envs.reset()
        counted = np.zeros(n, np.int64)
        while (counted < quota).any():
            step = envs.step(np.asarray(act(obs)))
            for i in np.flatnonzero(step.episode_end & (counted < quota)):
                scores[i].append(float(step.episode_score[i]))
                counted[i] += 1
            obs = step.obs
    return np.array([s for env_scores in scores for s in env_scores], np.float64)
