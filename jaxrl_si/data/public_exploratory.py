r"""Unlabelled exploratory data for the HILP track (ExORL, D4RL, OGBench) as dataset versions of ours.

HILP (Park, Kreiman & Levine 2024, "Foundation Policies with Hilbert Representations", arXiv
2402.15567, github.com/seohongpark/HILP) learns from reward-free data: ExORL for zero-shot RL
(`hilp_zsrl`), D4RL antmaze and kitchen for goal reaching (`hilp_gcrl`); OGBench (Park et al.
2024, arXiv 2410.20092) is the newer goal-conditioned suite. Each `read_*` converts public files
to host `OfflineData` and a `DatasetMetadata`; each `prepare_*` looks for the files under
`download_dir`, downloads them there when absent, converts them and writes them with
`tfds_io.write_dataset`. **The downloads cannot run here (no internet)**: `_download` is untested;
finding, unpacking, parsing, converting and writing are tested on small files written in the
public formats.

The formats (read at ExORL a3fb07a, HILP be2431b, D4RL 89141a6, OGBench 1d41409):

- ExORL (Yarats et al. 2022, arXiv 2201.13425; `download.sh`, `replay_buffer.py`):
  `https://dl.fbaipublicfiles.com/exorl/<domain>/<algorithm>.zip`, unzipped into
  `<domain>/<algorithm>/`, holds `buffer/<%Y%m%dT%H%M%S>_<index>_<T>.npz` (URLB's
  `_store_episode`), one DMC episode a file: `observation [T+1, D]`, `action [T+1, A]`,
  `reward [T+1, 1]`, `discount [T+1, 1]`, `physics [T+1, P]`. Row 0 is the reset (its action and
  reward are dummies); `action[t+1]` was taken at `observation[t]` and `reward[t+1]`,
  `discount[t+1]`, `physics[t+1]` followed it (`OfflineReplayBuffer._sample`; HILP's
  `in_memory_replay_buffer.py` alike, relabelling `reward[t+1]` per task from `physics[t+1]`).
  Files are read in name order, the first `max_episodes` (HILP: 5000; 20000 on jaco).
- D4RL (Fu et al. 2020, arXiv 2004.07219; URLs from `d4rl/infos.py`): one hdf5 file,
  `observations [N, D]`, `actions [N, A]`, `rewards [N]`, `terminals [N]`, `timeouts [N]` (absent
  from some old files) and extras such as antmaze's `infos/goal [N, 2]` (not kept). Row i's
  action was taken at row i's observation, `rewards[i]` followed it; an episode ends after a row
  with `terminals` or `timeouts` (`d4rl.sequence_dataset`).
- OGBench (`ogbench/utils.py`: `DATASET_URL`, `load_dataset`): `<name>.npz` and `<name>-val.npz`
  at `https://rail.eecs.berkeley.edu/datasets/ogbench/`, `observations [N, ...]`, `actions [N, A]`,
  `terminals [N]` (1 on the last row of each trajectory), `qpos`, `qvel` (not kept). No rewards.

Conversion to our `OfflineData` (the choices made):

- an episode per ExORL file, per run of D4RL / OGBench rows up to an episode end (the last row
  always ends one, as HILP's `dones_float[-1] = 1`; `sequence_dataset` drops a trailing partial
  run); padded to the longest, `length[e]` real steps, padding zero with flags False;
- the last step of an episode is kept with `is_last` and no next observation (the `Episodes`
  convention): ExORL's final observation is dropped; D4RL's timeout rows and OGBench's last rows
  are kept, where `qlearning_dataset` and OGBench's regular dataset drop them for want of a next
  observation (a learner bootstrapping from s_{t+1} loses them just the same);
- `is_terminal` (and `discount` 0) on the last step only: ExORL when its last `discount` is 0
  (DMC's time limits keep 1), D4RL at `terminals` when they end episodes, OGBench never (its
  data scripts set `terminate_at_goal=False`: trajectory ends are time limits);
- D4RL antmaze's `terminals` (1 on every step near the goal) end no episode and are dropped:
  HILP's goal-conditioned split (`hilp_gcrl/src/d4rl_utils.py`: `dones_float` from trajectory
  ends only); other D4RL files end episodes at both (`terminals_end_episodes`);
- `reward`: the file's (OGBench has none: 0); `features`: ExORL's per-task rewards from a
  `TaskRewards` (K = 0 without one), none for D4RL and OGBench (goals, not reward features);
- no segments, no pairs (segment length 1): the data has no preferences; `oracle_advantage` and
  `policy` 0; metadata `discount` 1 (no advantages; the learner picks γ), action bounds ±1 (DMC,
  antmaze, kitchen and OGBench);
- every array becomes float32 (OGBench's uint8 pixels too: 4× the memory); actions and
  observations are kept as stored (HILP clips D4RL actions to ±(1 − 1e−5) and keeps kitchen's
  first 30 observation dimensions: the agent's and the caller's choices).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import urllib.request
import zipfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxrl_si.data.offline import DatasetError, Episodes, OfflineData, Pairs, Segments
from jaxrl_si.data.tfds_io import DatasetMetadata, check_data, write_dataset
from jaxrl_si.envs.core import MissingBackendError
from jaxrl_si.errors import ConfigError

EXORL_URL = "https://dl.fbaipublicfiles.com/exorl/{domain}/{algorithm}.zip"
EXORL_DOMAINS = ("cartpole", "cheetah", "jaco", "point_mass_maze", "quadruped", "walker")
EXORL_ALGORITHMS = ("aps", "diayn", "disagreement", "icm", "icm_apt", "proto", "random", "rnd", "smm")
HILP_EXORL_EPISODES = 5000  # `replay_buffer_episodes` of HILP's walker, cheetah, quadruped runs (20000 on jaco)
_D4RL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
D4RL_URLS = {  # `d4rl/infos.py`: the datasets HILP uses (umaze, medium = big-maze, large = hardest-maze)
    "antmaze-umaze-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5",
    "antmaze-umaze-diverse-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
    "antmaze-medium-play-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5",
    "antmaze-medium-diverse-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
    "antmaze-large-play-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5",
    "antmaze-large-diverse-v2": f"{_D4RL}/ant_maze_v2/Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5",
    "kitchen-complete-v0": f"{_D4RL}/kitchen/mini_kitchen_microwave_kettle_light_slider-v0.hdf5",
    "kitchen-partial-v0": f"{_D4RL}/kitchen/kitchen_microwave_kettle_light_slider-v0.hdf5",
    "kitchen-mixed-v0": f"{_D4RL}/kitchen/kitchen_microwave_kettle_bottomburner_light-v0.hdf5",
}
OGBENCH_URL = "https://rail.eecs.berkeley.edu/datasets/ogbench"


@dataclasses.dataclass(frozen=True)
class TaskRewards:
    """Reward features of ExORL steps: `rewards(physics [T, P], reward [T]) -> [T, K]`, a column per name.

    `physics[t]` and `reward[t]` are the state and file reward that followed step t's action;
    a relabelling sets the DMC physics to each row and asks each task of the domain for its
    reward (HILP's `relabel_episode`; needs dm_control, not a dependency here).
    """

    names: tuple[str, ...]
    rewards: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _file_reward(physics: np.ndarray, reward: np.ndarray) -> np.ndarray:
    return reward[:, None]


FILE_REWARD = TaskRewards(("reward",), _file_reward)  # the identity case: the file's own reward, K = 1


class _Steps(NamedTuple):
    """One episode's real steps: `observation [n, ...]`, `action [n, A]`, `reward [n]`, `features [n, K]`."""

    observation: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    features: np.ndarray
    terminal: bool  # the last step ended in a terminal state


def exorl_url(domain: str, algorithm: str) -> str:
    """The archive of one ExORL dataset, e.g. `.../exorl/walker/rnd.zip`."""
    if domain not in EXORL_DOMAINS or algorithm not in EXORL_ALGORITHMS:
        raise ConfigError(f"ExORL has domains {EXORL_DOMAINS} and algorithms {EXORL_ALGORITHMS}, got {domain!r}, {algorithm!r}")
    return EXORL_URL.format(domain=domain, algorithm=algorithm)


def d4rl_url(env_name: str) -> str:
    """The hdf5 file of one D4RL dataset HILP uses (`d4rl/infos.py`)."""
    if env_name not in D4RL_URLS:
        raise ConfigError(f"`env_name` must be one of {tuple(D4RL_URLS)}, got {env_name!r}")
    return D4RL_URLS[env_name]


def ogbench_url(name: str, *, validation: bool = False) -> str:
    """The `.npz` of one OGBench dataset (`<name>-val.npz`: its validation split)."""
    if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*-v\d+", name):
        raise ConfigError(f"`name` must be an OGBench dataset name such as 'antmaze-large-navigate-v0', got {name!r}")
    return f"{OGBENCH_URL}/{name}{'-val' if validation else ''}.npz"


def read_exorl_buffer(
    buffer_dir, *, domain: str, algorithm: str, task_rewards: TaskRewards | None = None, max_episodes: int | None = None
) -> tuple[OfflineData, DatasetMetadata]:
    """The episode files of an ExORL `buffer` directory as host `OfflineData` (conversion: module docstring).

    The first `max_episodes` files in name order (all when None); `task_rewards` fills `features`.
    """
    buffer_dir = Path(buffer_dir)
    files = sorted(buffer_dir.glob("*.npz"))
    if not files:
        raise DatasetError(f"{buffer_dir}: no episode files (*.npz)")
    files = files[: _episode_cap(max_episodes)]
    runs = [_exorl_steps(path, task_rewards) for path in files]
    for path, run in zip(files, runs):
        for name in ("observation", "action", "features"):
            if (shape := getattr(run, name).shape[1:]) != (first := getattr(runs[0], name).shape[1:]):
                raise DatasetError(f"{path}: `{name}` steps have shape {shape}, those of {files[0].name} {first}")
    return _offline_data(
        runs,
        where=str(buffer_dir),
        env_name=f"exorl:{domain}",
        feature_names=() if task_rewards is None else task_rewards.names,
        policies=({"name": algorithm},),
        generator=f"exorl:{algorithm}",
        notes=f"{buffer_dir}: the first {len(files)} episode files in name order (conversion: jaxrl_si.data.public_exploratory)",
    )


def read_d4rl_hdf5(
    path, *, env_name: str, terminals_end_episodes: bool | None = None, max_episodes: int | None = None
) -> tuple[OfflineData, DatasetMetadata]:
    """One D4RL hdf5 file as host `OfflineData` (conversion: module docstring); needs the `d4rl` extra.

    `terminals_end_episodes` None: HILP's choice, False for antmaze (its `terminals` mark steps
    near the goal), True otherwise. The first `max_episodes` episodes (all when None).
    """
    path = Path(path)
    split = not env_name.startswith("antmaze") if terminals_end_episodes is None else terminals_end_episodes
    arrays = _read_hdf5(path, ("observations", "actions", "rewards", "terminals"), optional=("timeouts",))
    arrays = _checked(str(path), arrays, flat=("rewards", "terminals", "timeouts"))
    terminal = arrays["terminals"].astype(bool) & split
    ends = terminal | arrays.get("timeouts", np.zeros_like(terminal)).astype(bool)
    runs = [
        _Steps(arrays["observations"][run], arrays["actions"][run], arrays["rewards"][run], np.zeros((run.stop - run.start, 0)), terminal[run.stop - 1])
        for run in _row_runs(ends)[: _episode_cap(max_episodes)]
    ]
    return _offline_data(
        runs,
        where=str(path),
        env_name=f"d4rl:{env_name}",
        feature_names=(),
        policies=({"name": env_name},),
        generator=f"d4rl:{path.name}",
        notes=f"{path}: episodes end after {'terminals or ' if split else ''}timeouts (conversion: jaxrl_si.data.public_exploratory)",
        extra={"terminals_end_episodes": bool(split), "url": D4RL_URLS.get(env_name, "")},
    )


def read_ogbench_npz(path, *, name: str, max_episodes: int | None = None) -> tuple[OfflineData, DatasetMetadata]:
    """One OGBench `.npz` as host `OfflineData` (conversion: module docstring); rewards 0, no terminal steps."""
    path = Path(path)
    with np.load(path) as npz:
        _require(str(path), npz.files, ("observations", "actions", "terminals"))
        arrays = {key: npz[key] for key in ("observations", "actions", "terminals")}
    arrays = _checked(str(path), arrays, flat=("terminals",))
    runs = [
        _Steps(arrays["observations"][run], arrays["actions"][run], np.zeros(run.stop - run.start), np.zeros((run.stop - run.start, 0)), False)
        for run in _row_runs(arrays["terminals"].astype(bool))[: _episode_cap(max_episodes)]
    ]
    return _offline_data(
        runs,
        where=str(path),
        env_name=f"ogbench:{name}",
        feature_names=(),
        policies=({"name": name},),
        generator=f"ogbench:{path.name}",
        notes=f"{path}: episodes end after `terminals` (conversion: jaxrl_si.data.public_exploratory)",
    )


def prepare_exorl(
    directory,
    domain: str,
    algorithm: str,
    *,
    download_dir,
    task_rewards: TaskRewards | None = None,
    max_episodes: int | None = None,
    version: str = "1.0.0",
) -> Path:
    """Convert one ExORL dataset and write it as `version` of the dataset in `directory`; return its path.

    The buffer is looked for under `download_dir/<domain>/<algorithm>/`; when it is not there, the
    archive is downloaded to `download_dir/<domain>/`, unzipped there and deleted first (as `download.sh`).
    """
    url = exorl_url(domain, algorithm)
    root = Path(download_dir) / domain / algorithm
    if (buffer := _find_buffer(root)) is None:
        archive = _download(url, root.parent / f"{algorithm}.zip")
        _extract_zip(archive, root)
        archive.unlink()  # as `download.sh`: the unpacked buffer is what is read
        if (buffer := _find_buffer(root)) is None:
            raise DatasetError(f"the archive {url} unzipped into {root} has no buffer/*.npz")
    data, metadata = read_exorl_buffer(buffer, domain=domain, algorithm=algorithm, task_rewards=task_rewards, max_episodes=max_episodes)
    return write_dataset(directory, data, metadata, version=version)


def prepare_d4rl(
    directory, env_name: str, *, download_dir, terminals_end_episodes: bool | None = None, max_episodes: int | None = None, version: str = "1.0.0"
) -> Path:
    """Convert one D4RL dataset (downloaded into `download_dir` unless its file is there) and write it; return its path."""
    url = d4rl_url(env_name)
    file = _fetched(url, Path(download_dir) / url.rsplit("/", 1)[1])
    data, metadata = read_d4rl_hdf5(file, env_name=env_name, terminals_end_episodes=terminals_end_episodes, max_episodes=max_episodes)
    return write_dataset(directory, data, metadata, version=version)


def prepare_ogbench(
    directory, name: str, *, download_dir, validation: bool = False, max_episodes: int | None = None, version: str = "1.0.0"
) -> Path:
    """Convert one OGBench dataset (downloaded into `download_dir` unless its file is there) and write it; return its path."""
    url = ogbench_url(name, validation=validation)
    file = _fetched(url, Path(download_dir) / url.rsplit("/", 1)[1])
    data, metadata = read_ogbench_npz(file, name=name, max_episodes=max_episodes)
    return write_dataset(directory, data, metadata, version=version)


def _exorl_steps(path: Path, task_rewards: TaskRewards | None) -> _Steps:
    """One ExORL file's T steps: `observation[t]` with `action`, `reward`, `discount`, `physics` of row t + 1."""
    where = str(path)
    keys = ("observation", "action", "reward", "discount", *(() if task_rewards is None else ("physics",)))
    with np.load(path) as npz:
        _require(where, npz.files, keys)
        arrays = {key: npz[key] for key in keys}
    arrays = _checked(where, arrays, flat=("reward", "discount"))
    if (rows := len(arrays["observation"])) < 2:
        raise DatasetError(f"{where}: `observation` has {rows} row, an episode needs the reset row and a step")
    if (named := re.fullmatch(r".+_\d+_(\d+)", path.stem)) and int(named[1]) != rows - 1:
        raise DatasetError(f"{where}: the name says {named[1]} steps, `observation` has {rows} rows (T + 1 with the reset)")
    after = {key: array[1:] for key, array in arrays.items()}  # what followed each step's action
    if np.any(stop := after["discount"][:-1] == 0):
        raise DatasetError(f"{where}: `discount` is 0 at row {np.flatnonzero(stop)[0] + 1}, before the episode's last row")
    features = np.zeros((rows - 1, 0)) if task_rewards is None else _task_features(where, task_rewards, after["physics"], after["reward"])
    return _Steps(arrays["observation"][:-1], after["action"], after["reward"], features, bool(after["discount"][-1] == 0))


def _task_features(where: str, task_rewards: TaskRewards, physics: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """`task_rewards` of one episode, checked to be `[T, K]` and finite."""
    features = np.asarray(task_rewards.rewards(physics, reward))
    if features.shape != (len(reward), len(task_rewards.names)):
        raise DatasetError(f"{where}: `task_rewards` gave shape {features.shape}, expected {(len(reward), len(task_rewards.names))}")
    _check_finite(where, "task_rewards", features)
    return features


def _read_hdf5(path: Path, keys: tuple[str, ...], *, optional: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`keys` (and those of `optional` present) of an hdf5 file; h5py is imported here, not with the module."""
    try:
        import h5py
    except ImportError as err:
        raise MissingBackendError(
            "Reading D4RL files needs the optional package `h5py`, which is not installed; install it with: pip install 'jaxrl_si[d4rl]'"
        ) from err
    with h5py.File(path, "r") as file:
        present = [key for key in (*keys, *optional) if isinstance(file.get(key), h5py.Dataset)]
        _require(str(path), present, keys)
        return {key: file[key][()] for key in present}


def _require(where: str, present: Collection[str], keys: tuple[str, ...]) -> None:
    if missing := [key for key in keys if key not in present]:
        raise DatasetError(f"{where}: no `{missing[0]}` (keys: {sorted(present)})")


def _checked(where: str, arrays: dict[str, np.ndarray], *, flat: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`arrays` with `flat` ones as `[N]` (`[N, 1]` accepted), after checking shapes, common rows and finiteness."""
    first = next(iter(arrays))
    checked = {key: array[:, 0] if key in flat and array.ndim == 2 and array.shape[1] == 1 else array for key, array in arrays.items()}
    for key, array in checked.items():
        if key in flat and array.ndim != 1:
            raise DatasetError(f"{where}: `{key}` must be [N] or [N, 1], got shape {array.shape}")
        if key not in flat and array.ndim < 2:
            raise DatasetError(f"{where}: `{key}` must be [N, ...] with a feature axis, got shape {array.shape}")
        if len(array) != len(checked[first]):
            raise DatasetError(f"{where}: `{key}` has {len(array)} rows, `{first}` has {len(checked[first])}")
        _check_finite(where, key, array)
    if not len(checked[first]):
        raise DatasetError(f"{where}: `{first}` has no rows")
    return checked


def _check_finite(where: str, name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.all(finite := np.isfinite(array)):
        raise DatasetError(f"{where}: `{name}` holds a non-finite value (row {np.argwhere(~finite)[0][0]})")


def _row_runs(ends: np.ndarray) -> list[slice]:
    """The rows of each episode, one ending at every True of `ends [N]` and one at the last row."""
    stops = np.flatnonzero(np.append(ends[:-1], True)) + 1
    return [slice(int(start), int(stop)) for start, stop in zip(np.append(0, stops[:-1]), stops)]


def _episode_cap(max_episodes: int | None) -> int | None:
    if max_episodes is not None and (isinstance(max_episodes, bool) or not isinstance(max_episodes, int) or max_episodes < 1):
        raise ConfigError(f"`max_episodes` must be a positive int or None, got {max_episodes!r}")
    return max_episodes


def _offline_data(runs: list[_Steps], *, where: str, **fields) -> tuple[OfflineData, DatasetMetadata]:
    """Runs of steps as checked `OfflineData` without segments or pairs, and its metadata (`fields` + spaces)."""
    episodes = _episodes(runs)
    actions = episodes.action.shape[-1]
    metadata = DatasetMetadata(
        observation_shape=episodes.observation.shape[2:],
        action_shape=episodes.action.shape[2:],
        action_low=(-1.0,) * actions,
        action_high=(1.0,) * actions,
        segment_length=1,
        discount=1.0,
        **fields,
    )
    none = np.zeros(0, np.int32)
    data = OfflineData(episodes, Segments(none, none, length=1), Pairs(none, none, np.zeros(0, np.float32)))
    check_data(data, metadata, where=where)
    return data, metadata


def _episodes(runs: list[_Steps]) -> Episodes:
    """`E` runs as `Episodes` padded to the longest `T`: zeros and False after `length[e]` real steps."""
    length = np.array([len(run.reward) for run in runs], np.int32)
    step = np.arange(length.max())
    real = step < length[:, None]
    last = step == length[:, None] - 1
    terminal = last & np.array([run.terminal for run in runs])[:, None]
    return Episodes(
        observation=_padded([run.observation for run in runs], len(step)),
        action=_padded([run.action for run in runs], len(step)),
        reward=_padded([run.reward for run in runs], len(step)),
        discount=(real & ~terminal).astype(np.float32),
        is_first=real & (step == 0),
        is_last=last,
        is_terminal=terminal,
        features=_padded([run.features for run in runs], len(step)),
        oracle_advantage=np.zeros(real.shape, np.float32),
        length=length,
        policy=np.zeros(len(runs), np.int32),
    )


def _padded(arrays: list[np.ndarray], steps: int) -> np.ndarray:
    """`[n_e, ...]` arrays as one float32 `[E, steps, ...]`, zero after each one's rows."""
    out = np.zeros((len(arrays), steps, *arrays[0].shape[1:]), np.float32)
    for e, array in enumerate(arrays):
        out[e, : len(array)] = array
    return out


def _find_buffer(root: Path) -> Path | None:
    """The first directory named `buffer` at or below `root` that holds `.npz` files."""
    candidates = [root / "buffer", *sorted(root.rglob("buffer"))] if root.is_dir() else []
    return next((path for path in candidates if path.is_dir() and any(path.glob("*.npz"))), None)


def _fetched(url: str, file: Path) -> Path:
    """`file`, downloaded from `url` first unless it is there."""
    return file if file.is_file() else _download(url, file)


def _download(url: str, target: Path) -> Path:
    """`url` saved as `target` through a `.part` file, so a failed download leaves no `target` (untested here)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with urllib.request.urlopen(url) as response, partial.open("wb") as file:
        shutil.copyfileobj(response, file)
    partial.replace(target)
    return target


def _extract_zip(archive: Path, target: Path) -> None:
    if not zipfile.is_zipfile(archive):
        raise DatasetError(f"{archive} is not a zip archive")
    with zipfile.ZipFile(archive) as files:
        files.extractall(target)
