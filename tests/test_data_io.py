"""Offline datasets on disk: TFDS array_record round trip, versions, bad input, interrupted writes, CPL's files."""

import os
import signal
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import envs
from jaxrl_si.data import offline, public, tables_io, tfds_io
from jaxrl_si.data.tfds_io import (
    DatasetError,
    DatasetMetadata,
    Expected,
    read_dataset,
    versions,
    write_dataset,
)
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences.oracles import HardLabels

L = 5  # segment length


def _data(seed: int = 0, num_episodes: int = 4, max_length: int = 20, num_pairs: int = 10) -> offline.OfflineData:
    """A few episodes (obs 3, action 1, K = 3 features), one shorter than the rest, their segments and pairs."""
    rng = np.random.default_rng(seed)
    e, t = num_episodes, max_length
    length = np.full(e, t, np.int32)
    length[1] = t - 7
    step = np.arange(t)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
    episodes = offline.Episodes(
        observation=normal(e, t, 3),
        action=normal(e, t, 1),
        reward=normal(e, t),
        discount=np.where(step < length[:, None] - 1, 1.0, 0.0).astype(np.float32),
        is_first=np.broadcast_to(step == 0, (e, t)).copy(),
        is_last=step == length[:, None] - 1,
        is_terminal=step == length[:, None] - 1,
        features=normal(e, t, 3),
        oracle_advantage=normal(e, t),
        length=length,
        policy=(np.arange(e) % 2).astype(np.int32),
    )
    episode, start = offline.segment_starts(length, L, 3)
    segments = offline.Segments(episode, start, length=L)
    pick = lambda: rng.integers(0, len(episode), num_pairs).astype(np.int32)
    pairs = offline.Pairs(pick(), pick(), rng.choice([0.0, 0.5, 1.0, 0.25], num_pairs).astype(np.float32))
    return offline.OfflineData(episodes, segments, pairs)


METADATA = DatasetMetadata(
    env_name="gymnax:Pendulum-v1",
    observation_shape=(3,),
    action_shape=(1,),
    action_low=(-1.0,),
    action_high=(1.0,),
    feature_names=("angle_sq", "speed_sq", "torque_sq"),
    segment_length=L,
    discount=0.99,
    policies=({"stage": 0, "env_steps": 0, "mean_return": -1200.5}, {"stage": 1, "env_steps": 40960, "mean_return": -310.0}),
    action_noise=0.1,
    seed=3,
    oracle="HardLabels(regret)",
    pair_mode="sparse",
    generator="test",
    notes="tiny",
    extra={"true_weights": (-1.0, -0.1, -0.001), "ppo": {"num_envs": 4, "hidden_sizes": [8, 8]}},
)


def _assert_same(read: offline.OfflineData, written: offline.OfflineData) -> None:
    """Every leaf equal, dtype and shape included, and the segments' static length."""
    paths_read, paths_written = jax.tree_util.tree_flatten_with_path(read)[0], jax.tree_util.tree_flatten_with_path(written)[0]
    assert [p for p, _ in paths_read] == [p for p, _ in paths_written]
    for (path, a), (_, b) in zip(paths_read, paths_written):
        assert isinstance(a, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    assert read.segments.length == written.segments.length


def _shard(root, kind: str):
    (path,) = (root / tfds_io.DATASET_NAME / kind / root.name).glob("*.array_record-*")
    return path


def test_round_trip_is_exact(tmp_path):
    data = _data()
    root = write_dataset(tmp_path, data, METADATA)
    read, metadata = read_dataset(tmp_path)
    assert root == tmp_path / "1.0.0"
    _assert_same(read, data)
    assert metadata == METADATA
    assert metadata.policies[1]["mean_return"] == -310.0
    assert metadata.extra["ppo"] == {"num_envs": 4, "hidden_sizes": [8, 8]}


def test_jax_arrays_are_written_as_host_arrays(tmp_path):
    data = _data()
    write_dataset(tmp_path, jax.device_put(data), METADATA)
    _assert_same(read_dataset(tmp_path)[0], data)


def test_versions_are_listed_and_the_latest_is_read_by_default(tmp_path):
    assert versions(tmp_path / "absent") == []
    for k, version in enumerate(("1.0.0", "1.10.0", "1.2.0")):
        write_dataset(tmp_path, _data(seed=k), METADATA, version=version)
    assert versions(tmp_path) == ["1.0.0", "1.2.0", "1.10.0"]  # numeric, not text, order
    _assert_same(read_dataset(tmp_path)[0], _data(seed=1))
    _assert_same(read_dataset(tmp_path, version="1.2.0")[0], _data(seed=2))
    with pytest.raises(DatasetError, match=r"1\.0\.0 exists"):
        write_dataset(tmp_path, _data(), METADATA, version="1.0.0")
    with pytest.raises(DatasetError, match=r"no version '1\.3\.0'.*'1\.10\.0'"):
        read_dataset(tmp_path, version="1.3.0")
    with pytest.raises(DatasetError, match=r"empty has no complete version; complete versions: \[\]"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="`version`"):
        write_dataset(tmp_path, _data(), METADATA, version="iteration-3")


def test_segment_views_of_the_read_data_are_the_raw_steps(tmp_path):
    data = _data()
    write_dataset(tmp_path, data, METADATA)
    read, _ = read_dataset(tmp_path)
    index = jnp.arange(read.segments.num_segments)
    batch = offline.gather_segments(jax.device_put(read.episodes), jax.device_put(read.segments), index)
    for s in range(data.segments.num_segments):
        e, start = data.segments.episode[s], data.segments.start[s]
        for name in offline.STEP_FIELDS:
            np.testing.assert_array_equal(getattr(batch, name)[s], getattr(data.episodes, name)[e, start : start + L], err_msg=name)
    assert bool(batch.mask.all())


def test_empty_pair_table_round_trips(tmp_path):
    data = _data(num_pairs=0)
    root = write_dataset(tmp_path, data, METADATA)
    assert not (root / tfds_io.DATASET_NAME / "pairs").exists()  # TFDS refuses empty splits
    read, _ = read_dataset(tmp_path)
    _assert_same(read, data)


def _with(data: offline.OfflineData, table: str, **fields) -> offline.OfflineData:
    return data.replace(**{table: getattr(data, table).replace(**fields)})


BAD = {
    "`episodes.reward` must be float32": lambda d: _with(d, "episodes", reward=d.episodes.reward.astype(np.float64)),
    "`episodes.features` must have shape \\(4, 20, 3\\)": lambda d: _with(d, "episodes", features=d.episodes.features[..., :2]),
    "`episodes.observation` must have shape": lambda d: _with(d, "episodes", observation=d.episodes.observation[..., :2]),
    "`episodes.is_last` must be bool": lambda d: _with(d, "episodes", is_last=d.episodes.is_last.astype(np.float32)),
    "`episodes.length` must lie in \\[1, 21\\)": lambda d: _with(d, "episodes", length=d.episodes.length + 1),
    "`episodes.policy` must lie in \\[0, 2\\)": lambda d: _with(d, "episodes", policy=d.episodes.policy + 1),
    "`segments.length` 4 != metadata.segment_length 5": lambda d: d.replace(segments=d.segments.replace(length=4)),
    "segment 0 .* runs past the end of episode 1": lambda d: _with(
        d, "segments", episode=np.ones_like(d.segments.episode), start=np.full_like(d.segments.start, 9)
    ),  # episode 1 has 13 steps
    "`pairs.second` must lie in \\[0, 21\\)": lambda d: _with(d, "pairs", second=d.pairs.second + 21),  # 6 + 3 + 6 + 6 segments
    "`pairs.first` must be int32": lambda d: _with(d, "pairs", first=d.pairs.first.astype(np.int64)),
    "`pairs.label` must lie in \\[0, 1\\], got 1.5 at pair 2": lambda d: _with(
        d, "pairs", label=np.where(np.arange(10) == 2, 1.5, d.pairs.label).astype(np.float32)
    ),
    "`pairs.label` must lie in \\[0, 1\\], got nan": lambda d: _with(d, "pairs", label=np.full(10, np.nan, np.float32)),
}


@pytest.mark.parametrize("message", BAD)
def test_bad_data_is_refused_on_write_naming_the_field(tmp_path, message):
    with pytest.raises(DatasetError, match=rf"write_dataset\(data\): {message}"):
        write_dataset(tmp_path, BAD[message](_data()), METADATA)
    assert versions(tmp_path) == [] and not list(tmp_path.glob(".incomplete-*"))


def test_bad_labels_in_a_file_are_refused_on_read(tmp_path, monkeypatch):
    data = _with(_data(), "pairs", label=np.full(10, -0.5, np.float32))
    with monkeypatch.context() as patch:
        patch.setattr(tfds_io, "check_data", lambda *args, **kwargs: None)  # as a foreign writer would
        root = write_dataset(tmp_path, data, METADATA)
    with pytest.raises(DatasetError, match=rf"{root}: `pairs.label` must lie in \[0, 1\], got -0.5"):
        read_dataset(tmp_path)


def test_metadata_is_checked():
    with pytest.raises(DatasetError, match="`action_low` has 2 bounds for action shape \\(1,\\)"):
        METADATA.__class__(**{**METADATA.__dict__, "action_low": (-1.0, -1.0)})
    with pytest.raises(DatasetError, match="`pair_mode`"):
        METADATA.__class__(**{**METADATA.__dict__, "pair_mode": "rank"})
    with pytest.raises(DatasetError, match="`policies` must be JSON-able"):
        METADATA.__class__(**{**METADATA.__dict__, "policies": ({"params": object()},)})
    with pytest.raises(DatasetError, match=r"here: unknown metadata fields \['colour'\]"):
        DatasetMetadata.from_json({**METADATA.to_json(), "colour": 1}, where="here")
    with pytest.raises(DatasetError, match=r"here: metadata lacks \['env_name'\]"):
        DatasetMetadata.from_json({k: v for k, v in METADATA.to_json().items() if k != "env_name"}, where="here")
    assert DatasetMetadata.from_json({k: v for k, v in METADATA.to_json().items() if k != "extra"}, where="here").extra == {}


def test_a_dataset_for_other_spaces_is_refused(tmp_path):
    write_dataset(tmp_path, _data(), METADATA)
    read_dataset(tmp_path, expect=envs.make("gymnax:Pendulum-v1"))  # obs (3,), action (1,): fits
    read_dataset(tmp_path, expect=Expected(action_shape=(1,)))
    with pytest.raises(DatasetError, match=r"1\.0\.0: the dataset \(gymnax:Pendulum-v1\) has observation_shape \(3,\), expected \(1,\)"):
        read_dataset(tmp_path, expect=envs.ContinuousActionEnv())
    with pytest.raises(DatasetError, match=r"has action_shape \(1,\), expected \(2,\)"):
        read_dataset(tmp_path, expect=Expected(action_shape=(2,)))


@pytest.mark.parametrize("kind", ["episodes", "pairs"])
def test_a_missing_shard_is_named(tmp_path, kind):
    root = write_dataset(tmp_path, _data(), METADATA)
    shard = _shard(root, kind)
    shard.unlink()
    with pytest.raises(DatasetError, match=rf"{shard} is missing"):
        read_dataset(tmp_path)


def test_a_truncated_shard_is_named(tmp_path):
    root = write_dataset(tmp_path, _data(), METADATA)
    shard = _shard(root, "segments")
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(DatasetError, match=rf"{shard} is truncated or changed"):
        read_dataset(tmp_path)


def test_a_corrupted_shard_of_the_right_size_is_named(tmp_path):
    root = write_dataset(tmp_path, _data(), METADATA)
    shard = _shard(root, "episodes")
    with open(shard, "r+b") as file:
        file.write(b"\0" * 256)
    with pytest.raises(DatasetError, match=rf"{shard.parent}: cannot be read"):
        read_dataset(tmp_path)


def test_an_exception_mid_write_leaves_nothing_and_the_old_version_intact(tmp_path, monkeypatch):
    write_dataset(tmp_path, _data(seed=0), METADATA)
    real = tables_io._write_table

    def fail_on_pairs(data_dir, kind, *args):
        if kind == "pairs":
            raise KeyboardInterrupt
        real(data_dir, kind, *args)

    monkeypatch.setattr(tables_io, "_write_table", fail_on_pairs)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path, _data(seed=1), METADATA, version="1.1.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0.0"]
    _assert_same(read_dataset(tmp_path)[0], _data(seed=0))


KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from jaxrl_si.data import tables_io, tfds_io
from test_data_io import METADATA, _data

real = tables_io._write_table
def die_on_pairs(data_dir, kind, *args):
    if kind == "pairs":
        os.kill(os.getpid(), signal.SIGKILL)
    real(data_dir, kind, *args)

tables_io._write_table = die_on_pairs
tfds_io.write_dataset({directory!r}, _data(seed=1), METADATA, version="1.1.0")
"""


def test_a_killed_write_is_never_read_and_is_cleaned_up_by_the_next(tmp_path):
    write_dataset(tmp_path, _data(seed=0), METADATA)
    script = KILLED_WRITER.format(tests=os.path.dirname(__file__), directory=str(tmp_path))
    killed = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(tmp_path.glob(".incomplete-*"))) == 1  # episodes and segments were written there
    assert versions(tmp_path) == ["1.0.0"]
    _assert_same(read_dataset(tmp_path)[0], _data(seed=0))
    write_dataset(tmp_path, _data(seed=1), METADATA, version="1.1.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.0.0", "1.1.0"]


NO_TENSORFLOW = """
import sys
from jaxrl_si.data import tfds_io
assert "tensorflow" not in sys.modules, "import"
sys.path.insert(0, {tests!r})
from test_data_io import METADATA, _data
tfds_io.write_dataset({directory!r}, _data(), METADATA)
tfds_io.read_dataset({directory!r})
assert "tensorflow" not in sys.modules, "write and read"
"""


def test_tensorflow_is_never_imported(tmp_path):
    script = NO_TENSORFLOW.format(tests=os.path.dirname(__file__), directory=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert versions(tmp_path) == ["1.0.0"]


# -- the CPL paper's MetaWorld files -----------------------------------------------------------


def _cpl_file(path, rows: int = 8, length: int = 6, obs: int = 5, action: int = 4, seed: int = 0):
    """A small file with the keys, shapes and dtypes of `mw_<task>_ep2500_n0.3.npz` (see `public`)."""
    rng = np.random.default_rng(seed)
    score = rng.normal(size=rows)
    score[4] = score[1]  # a tie: pair 1 when there are 3 pairs (row 1 against row 1 + 3)
    np.savez_compressed(
        path,
        obs=rng.normal(size=(rows, length, obs)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(rows, length, action)).astype(np.float32),
        reward=rng.normal(size=(rows, length)),  # float64, as an unconverted file would have
        state=rng.normal(size=(rows, length, 9)).astype(np.float32),
        timestep=np.tile(np.arange(length), (rows, 1)),
        done=np.zeros(rows, bool),
        discount=np.full(rows, 0.99, np.float32),
        rl_sum=score.astype(np.float32),
        rl_dis_sum=rng.normal(size=rows).astype(np.float32),
    )
    return np.load(path)


def test_cpl_sparse_file_becomes_fixed_pairs_with_the_official_labels(tmp_path):
    raw = _cpl_file(tmp_path / "mw.npz")
    data, metadata = public.read_cpl_npz(tmp_path / "mw.npz", task="drawer-open-v2", mode="sparse", capacity=3)
    episodes = data.episodes
    np.testing.assert_array_equal(episodes.observation, raw["obs"][:6])
    np.testing.assert_array_equal(episodes.reward, raw["reward"][:6].astype(np.float32))
    assert episodes.features.shape == (6, 6, 0) and episodes.reward.dtype == np.float32
    np.testing.assert_array_equal(episodes.oracle_advantage.sum(1), raw["rl_sum"][:6])
    np.testing.assert_array_equal(data.segments.episode, np.arange(6))
    np.testing.assert_array_equal(data.segments.start, np.zeros(6))
    np.testing.assert_array_equal(data.pairs.first, [0, 1, 2])
    np.testing.assert_array_equal(data.pairs.second, [3, 4, 5])
    score = raw["rl_sum"]
    official = (score[:3] < score[3:6]) + 0.5 * (score[:3] == score[3:6])  # FeedbackBuffer: P(second > first)
    np.testing.assert_array_equal(data.pairs.label, 1.0 - official)
    assert data.pairs.label[1] == 0.5
    relabelled = offline.label_pairs(jax.device_put(episodes), jax.device_put(data.segments), data.pairs.first, data.pairs.second, HardLabels())
    np.testing.assert_array_equal(relabelled, data.pairs.label)
    assert (metadata.observation_shape, metadata.action_shape, metadata.segment_length) == ((5,), (4,), 6)
    assert (metadata.env_name, metadata.pair_mode, metadata.feature_names) == ("metaworld:drawer-open-v2", "sparse", ())


def test_cpl_dense_file_keeps_segments_and_no_pairs(tmp_path):
    raw = _cpl_file(tmp_path / "mw.npz")
    data, metadata = public.read_cpl_npz(tmp_path / "mw.npz", task="door-open-v2", mode="dense", capacity=7)
    assert data.segments.num_segments == 7 and data.pairs.num_pairs == 0 and metadata.pair_mode == "dense"
    np.testing.assert_array_equal(data.episodes.action, raw["action"][:7])
    write_dataset(tmp_path / "ds", data, metadata)
    read, read_metadata = read_dataset(tmp_path / "ds")
    _assert_same(read, data)
    assert read_metadata == metadata


def test_cpl_file_errors_name_the_file(tmp_path):
    _cpl_file(tmp_path / "mw.npz")
    with pytest.raises(DatasetError, match=r"mw\.npz: no \['rl_regret'\] \(keys: \['action', 'discount'"):
        public.read_cpl_npz(tmp_path / "mw.npz", task="drawer-open-v2", label_key="rl_regret")
    with pytest.raises(DatasetError, match=r"mw\.npz: `obs` has 8 rows, 20000 are needed"):
        public.read_cpl_npz(tmp_path / "mw.npz", task="drawer-open-v2")  # the paper's 10000 pairs
    with pytest.raises(ConfigError, match="`task` must be one of"):
        public.cpl_file_name("drawer-open")


def test_prepare_cpl_metaworld_unpacks_the_archive_and_writes_a_version(tmp_path, monkeypatch):
    name = public.cpl_file_name("sweep-into-v2")
    _cpl_file(tmp_path / name)
    with zipfile.ZipFile(tmp_path / "archive", "w") as archive:  # the Drive file's name has no extension
        archive.write(tmp_path / name, f"mw/pref/{name}")
    downloads = tmp_path / "downloads"
    monkeypatch.setattr(public, "_download", lambda download_dir: tmp_path / "archive")
    root = public.prepare_cpl_metaworld(tmp_path / "ds", "sweep-into-v2", download_dir=downloads, mode="sparse", capacity=4)
    assert (downloads / "extracted" / "mw" / "pref" / name).is_file()
    expected, expected_metadata = public.read_cpl_npz(tmp_path / name, task="sweep-into-v2", capacity=4)
    read, metadata = read_dataset(root.parent)
    _assert_same(read, expected)
    assert metadata == expected_metadata
    monkeypatch.setattr(public, "_download", lambda download_dir: pytest.fail("downloaded again"))
    public.prepare_cpl_metaworld(tmp_path / "ds", "sweep-into-v2", download_dir=downloads, capacity=4, version="1.1.0")
    assert versions(tmp_path / "ds") == ["1.0.0", "1.1.0"]


def test_data_built_in_memory_is_checked_before_any_program_reads_it():
    data = _data()
    cases = {
        "segments.episode": data.replace(segments=data.segments.replace(episode=data.segments.episode + 100)),
        "runs past the end": data.replace(segments=data.segments.replace(start=np.full_like(data.segments.start, 18))),
        "pairs.second": data.replace(pairs=data.pairs.replace(second=data.pairs.second + 1000)),
        "pairs.label": data.replace(pairs=data.pairs.replace(label=data.pairs.label + 2)),
        "episodes.reward": data.replace(episodes=data.episodes.replace(reward=_nan_first(data.episodes.reward))),
    }
    for field, bad in cases.items():
        with pytest.raises(offline.DatasetError, match=field):
            offline.check_views(bad, where="in memory")
    offline.check_views(data, where="in memory")


def _nan_first(x):
    x = np.array(x, copy=True)
    x[0, 0] = np.nan
    return x
