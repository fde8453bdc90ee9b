r"""The CPL paper's MetaWorld preference data as a dataset version of ours.

Hejna et al. 2023 (Contrastive Preference Learning, arXiv 2310.13639, Sec. 5.1) release one
file per MetaWorld task, `mw_<task>_ep2500_n0.3.npz`, in an archive linked from the official
README (github.com/jhejna/cpl, "Download the metaworld datasets", a Google Drive file; the
configs read it from `datasets/mw/pref/`). `prepare_cpl_metaworld` downloads it with TFDS's
download manager (which follows Google Drive's confirmation page), converts one task's file and
writes it with `tfds_io.write_dataset`. **The download cannot run here (no internet)**: that one
call is untested; the unpacking, finding, parsing and writing are tested on small files written
in the same format.

How the official scripts made a file (read at commit b333667):

1. `scripts/create_dataset.py`: 2500 episodes of a SAC checkpoint with Gaussian action noise
   σ = 0.3, actions clipped to [−1, 1]; MetaWorld's wrapper (`research/envs/metaworld.py`)
   ends an episode after 250 steps with discount 1 (no termination), divides the reward by 10
   and drops 4 of the 39 observation dimensions (35 remain).
2. `scripts/create_comparison_dataset.py`: `--size` 20000 segments of `--segment-size` 64
   steps drawn uniformly over time steps, never across an episode's end
   (`sample_sequence`), concatenated and saved with `np.savez_compressed`: `obs [N, L, D]`,
   `action [N, L, A]`, `reward [N, L]`, `state`, `timestep [N, L]`, and `done`, `discount`
   `[N]`. `obs[t]` is where `action[t]` was taken; `reward[t]` followed it.
3. `scripts/add_pref_labels.py`: per-segment scores `[N]` from the SAC oracle, among them
   `rl_sum` = Σ_{t<L−1} r_t + V(s_{L−1}) − V(s_0) (V: the critic's mean over 64 sampled
   actions), the regret-like score the paper labels with.

Training (`research/datasets/feedback_buffer.py`) reads the first rows only: *sparse*
(`mode: comparison`, capacity 10000 pairs) pairs row i with row i + capacity among the first
2·capacity rows; *dense* (`mode: rank`, capacity 2500) keeps the first 2500 rows and pairs each
with a random one per batch. Labels are hard: the higher score is preferred, ½ on a tie.

Conversion to our `OfflineData` (what the file cannot tell us, and the choice made):

- each row becomes an episode of its own, `length` = L (the file keeps no episode ids);
  `is_first` / `is_last` mark the row's ends, `is_terminal` is False and `discount` 1
  (MetaWorld never terminates); one segment per row, `(row, 0)`, of length L;
- `features`: none in the file, K = 0;
- `oracle_advantage`: the row's score at step 0 and zeros after, so the sum over the segment is
  the file's score and `dense_pair_batch` / `label_pairs` with `HardLabels` reproduce the
  official labels; a per-step advantage is not in the file;
- sparse: `pairs` (i, i + capacity) labelled P(first ≻ second) = 1 / 0 / ½ (the official `label`
  means the opposite, P(second ≻ first)); dense: no fixed pairs (`pair_mode` "dense");
- `policy` 0 for every row (one entry in `metadata.policies`: the checkpoints are not named);
- float64 arrays become float32 (as the official `remove_float64`); actions are kept as stored
  (the official loader clips them to ±(1 − 1e−5) for its tanh actor: the agent's job);
  `state`, `timestep`, `done`, `discount` and the other scores are not kept.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxrl_si.data.offline import Episodes, OfflineData, Pairs, Segments
from jaxrl_si.data.tfds_io import (
    DatasetError,
    DatasetMetadata,
    check_data,
    write_dataset,
)
from jaxrl_si.errors import ConfigError

CPL_DATA_URL = "https://drive.google.com/uc?export=download&id=1lo5Wt9Go_E_5c8ymfXFvsTY6kDUelqu2"
CPL_TASKS = ("bin-picking-v2", "button-press-v2", "door-open-v2", "drawer-open-v2", "plate-slide-v2", "sweep-into-v2")
CPL_CAPACITY = {"sparse": 10_000, "dense": 2_500}  # pairs (sparse) or segments (dense), the paper's configs
CPL_DISCOUNT = 0.99  # `FeedbackBuffer` and `add_pref_labels.py` defaults
_REQUIRED = ("obs", "action", "reward")


def cpl_file_name(task: str) -> str:
    """The file of one task, e.g. `mw_drawer-open-v2_ep2500_n0.3.npz`."""
    if task not in CPL_TASKS:
        raise ConfigError(f"`task` must be one of {CPL_TASKS}, got {task!r}")
    return f"mw_{task}_ep2500_n0.3.npz"


def read_cpl_npz(
    path, *, task: str, mode: str = "sparse", capacity: int | None = None, label_key: str = "rl_sum"
) -> tuple[OfflineData, DatasetMetadata]:
    """One CPL MetaWorld file as host `OfflineData` and its metadata (conversion: module docstring).

    `mode` "sparse" keeps `capacity` fixed pairs (default 10000: 2·capacity rows), "dense"
    `capacity` segments (default 2500) and no pairs; `label_key` is the score labels follow.
    """
    if mode not in CPL_CAPACITY:
        raise ConfigError(f"`mode` must be one of {tuple(CPL_CAPACITY)}, got {mode!r}")
    capacity = CPL_CAPACITY[mode] if capacity is None else capacity
    rows = 2 * capacity if mode == "sparse" else capacity
    arrays = _load_rows(Path(path), (*_REQUIRED, label_key), rows)
    score = arrays[label_key]
    episodes = _episodes(arrays["obs"], arrays["action"], arrays["reward"], score)
    length = episodes.max_length
    segments = Segments(np.arange(rows, dtype=np.int32), np.zeros(rows, np.int32), length=length)
    first = np.arange(capacity if mode == "sparse" else 0, dtype=np.int32)
    second = first + capacity
    label = (0.5 * (1.0 + np.sign(score[first] - score[second]))).astype(np.float32)  # hard labels, ½ on a tie
    metadata = DatasetMetadata(
        env_name=f"metaworld:{task}",
        observation_shape=episodes.observation.shape[2:],
        action_shape=episodes.action.shape[2:],
        action_low=(-1.0,) * episodes.action.shape[-1],
        action_high=(1.0,) * episodes.action.shape[-1],
        feature_names=(),
        segment_length=length,
        discount=CPL_DISCOUNT,
        policies=({"name": "SAC checkpoint of the CPL authors", "success": "about 15-60 %"},),
        action_noise=0.3,
        oracle=f"cpl:{label_key} (SAC critic, hard labels)",
        pair_mode=mode,
        generator="jhejna/cpl create_dataset.py, create_comparison_dataset.py, add_pref_labels.py",
        notes=f"{Path(path).name}: first {rows} rows, each a segment of its own episode (conversion: jaxrl_si.data.public)",
    )
    data = OfflineData(episodes, segments, Pairs(first, second, label))
    check_data(data, metadata, where=str(path))
    return data, metadata


def prepare_cpl_metaworld(
    directory, task: str, *, download_dir, mode: str = "sparse", capacity: int | None = None, version: str = "1.0.0"
) -> Path:
    """Convert `task`'s CPL file and write it as `version` of the dataset in `directory`; return its path.

    The file is looked for under `download_dir`; when it is not there, the archive is downloaded
    into `download_dir` and extracted there first (cannot run here: see the module docstring).
    Putting the archive's files (or the one `.npz`) into `download_dir` skips the download.
    """
    name = cpl_file_name(task)
    download_dir = Path(download_dir)
    if not (found := sorted(download_dir.rglob(name))):
        _extract(_download(download_dir), download_dir / "extracted")
        if not (found := sorted(download_dir.rglob(name))):
            raise DatasetError(f"the archive {CPL_DATA_URL} extracted into {download_dir} has no {name}")
    data, metadata = read_cpl_npz(found[0], task=task, mode=mode, capacity=capacity)
    return write_dataset(directory, data, metadata, version=version)


def _download(download_dir: Path) -> Path:
    """The archive, downloaded by TFDS's download manager (which answers Google Drive's confirmation page)."""
    return Path(tfds.download.DownloadManager(download_dir=download_dir).download(CPL_DATA_URL))


def _extract(archive: Path, target: Path) -> None:
    """Unpack a zip or tar archive (its type found from its bytes: the Drive file's name says nothing)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as files:
            files.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as files:
            files.extractall(target, filter="data")
    else:
        raise DatasetError(f"{archive} is neither a zip nor a tar archive")


def _load_rows(path: Path, keys: tuple[str, ...], rows: int) -> dict[str, np.ndarray]:
    """The first `rows` rows of `keys` from an `.npz`, float64 as float32."""
    with np.load(path) as npz:
        if missing := [key for key in keys if key not in npz.files]:
            raise DatasetError(f"{path}: no {missing} (keys: {sorted(npz.files)})")
        arrays = {key: npz[key] for key in keys}
    for key, array in arrays.items():
        if len(array) < rows:
            raise DatasetError(f"{path}: `{key}` has {len(array)} rows, {rows} are needed (capacity)")
    if arrays["obs"].ndim != 3:
        raise DatasetError(f"{path}: `obs` must be [N, L, D] (state files only), got shape {arrays['obs'].shape}")
    return {key: (array[:rows].astype(np.float32) if array.dtype == np.float64 else array[:rows]) for key, array in arrays.items()}


def _episodes(obs: np.ndarray, action: np.ndarray, reward: np.ndarray, score: np.ndarray) -> Episodes:
    """Rows of segments `[N, L, ...]` as N one-segment episodes; `score [N]` as step 0's `oracle_advantage`."""
    rows, length = reward.shape
    step = np.arange(length)
    oracle_advantage = np.where(step == 0, score[:, None], 0.0).astype(np.float32)
    return Episodes(
        observation=obs,
        action=action,
        reward=reward,
        discount=np.ones((rows, length), np.float32),
        is_first=np.broadcast_to(step == 0, (rows, length)).copy(),
        is_last=np.broadcast_to(step == length - 1, (rows, length)).copy(),
        is_terminal=np.zeros((rows, length), bool),
        features=np.zeros((rows, length, 0), np.float32),
        oracle_advantage=oracle_advantage,
        length=np.full(rows, length, np.int32),
        policy=np.zeros(rows, np.int32),
    )
