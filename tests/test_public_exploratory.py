"""ExORL, D4RL and OGBench files (tiny ones, in the public formats) as `OfflineData`: alignment, padding, errors, round trip."""

import sys
import zipfile

import h5py
import numpy as np
import pytest

from jaxrl_si.data import public_exploratory as px
from jaxrl_si.data.offline import DatasetError
from jaxrl_si.data.tfds_io import read_dataset, write_dataset
from jaxrl_si.envs.core import MissingBackendError
from jaxrl_si.errors import ConfigError

TWO_TASKS = px.TaskRewards(("x", "y_plus_z"), lambda physics, reward: np.stack([physics[:, 0], physics[:, 1] + physics[:, 2]], 1))


def _exorl_episode(directory, index: int, steps: int, **replace) -> None:
    """One URLB/ExORL episode file: row r has observation (r, 100·index + r), action r + 0.5,
    reward 10·r, physics (r, −r, 2r); row 0's action and reward are dummies (999)."""
    r = np.arange(steps + 1, dtype=np.float32)[:, None]
    arrays = {
        "observation": np.concatenate([r, 100 * index + r], 1),
        "action": np.where(r == 0, 999.0, r + 0.5).astype(np.float32),
        "reward": np.where(r == 0, 999.0, 10 * r).astype(np.float32),
        "discount": np.ones_like(r),
        "physics": np.concatenate([r, -r, 2 * r], 1),
        **replace,
    }
    directory.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(directory / f"20220101T00000{index}_{index}_{steps}.npz", **{k: v for k, v in arrays.items() if v is not None})


def _d4rl_file(path, **replace) -> None:
    """7 rows: row i observation (i, −i), action i + 0.5, reward 10·i; a timeout at row 2, a terminal at row 4."""
    i = np.arange(7, dtype=np.float32)
    arrays = {
        "observations": np.stack([i, -i], 1),
        "actions": (i + 0.5)[:, None],
        "rewards": 10 * i,
        "terminals": i == 4,
        "timeouts": i == 2,
        "infos/goal": np.zeros((7, 2), np.float32),  # antmaze's extra (not kept)
        **replace,
    }
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if value is not None:
                file.create_dataset(key, data=value)


def _ogbench_file(path, **replace) -> None:
    """7 rows: row i observation (i, −i, 2i), action (i + 0.5, −i); trajectories end at rows 2 and 6."""
    i = np.arange(7, dtype=np.float32)
    arrays = {
        "observations": np.stack([i, -i, 2 * i], 1),
        "actions": np.stack([i + 0.5, -i], 1),
        "terminals": np.isin(i, (2, 6)),
        "qpos": np.zeros((7, 4), np.float32),
        **replace,
    }
    np.savez_compressed(path, **{k: v for k, v in arrays.items() if v is not None})


def test_exorl_steps_align_observation_t_with_row_t_plus_1_and_pad(tmp_path):
    _exorl_episode(tmp_path / "buffer", 0, steps=4)
    _exorl_episode(tmp_path / "buffer", 1, steps=3)
    data, metadata = px.read_exorl_buffer(tmp_path / "buffer", domain="walker", algorithm="rnd", task_rewards=TWO_TASKS)
    e = data.episodes
    t = np.arange(4, dtype=np.float32)
    # Step t: observation row t; action, reward, physics of row t + 1 (row 0's 999 dummies never appear).
    np.testing.assert_array_equal(e.observation[0], np.stack([t, t], 1))
    np.testing.assert_array_equal(e.action[0, :, 0], t + 1.5)
    np.testing.assert_array_equal(e.reward[0], 10 * (t + 1))
    np.testing.assert_array_equal(e.features[0], np.stack([t + 1, t + 1], 1))  # x = r, −r + 2r = r with r = t + 1
    # Episode 1 has 3 steps, padded to 4 with zeros and False flags.
    np.testing.assert_array_equal(e.length, [4, 3])
    np.testing.assert_array_equal(e.observation[1], [[0, 100], [1, 101], [2, 102], [0, 0]])
    np.testing.assert_array_equal(e.reward[1], [10, 20, 30, 0])
    np.testing.assert_array_equal(e.is_first, [[1, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(e.is_last, [[0, 0, 0, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(e.is_terminal, np.zeros((2, 4), bool))  # DMC time limits: discount stays 1
    np.testing.assert_array_equal(e.discount, [[1, 1, 1, 1], [1, 1, 1, 0]])
    assert not e.oracle_advantage.any() and not e.policy.any()
    assert data.segments.num_segments == 0 and data.segments.length == 1 and data.pairs.num_pairs == 0
    assert (metadata.env_name, metadata.generator, metadata.feature_names) == ("exorl:walker", "exorl:rnd", ("x", "y_plus_z"))
    assert (metadata.observation_shape, metadata.action_shape, metadata.policies) == ((2,), (1,), ({"name": "rnd"},))
    assert (metadata.segment_length, metadata.discount) == (1, 1.0)


def test_exorl_file_reward_terminal_and_episode_cap(tmp_path):
    _exorl_episode(tmp_path, 0, steps=3, discount=np.array([[1], [1], [1], [0]], np.float32))
    _exorl_episode(tmp_path, 1, steps=2)
    data, metadata = px.read_exorl_buffer(tmp_path, domain="cheetah", algorithm="proto", task_rewards=px.FILE_REWARD, max_episodes=1)
    e = data.episodes
    np.testing.assert_array_equal(e.features[..., 0], e.reward)  # the identity case
    np.testing.assert_array_equal(e.length, [3])  # the first file in name order only
    np.testing.assert_array_equal(e.is_terminal, [[0, 0, 1]])
    np.testing.assert_array_equal(e.discount, [[1, 1, 0]])
    assert metadata.feature_names == ("reward",)
    without, _ = px.read_exorl_buffer(tmp_path, domain="cheetah", algorithm="proto")
    assert without.episodes.features.shape == (2, 3, 0)


EXORL_ERRORS = {
    "no `discount`": {"discount": None},
    "no `physics`": {"physics": None},  # needed by the task rewards
    "`reward` has 4 rows, `observation` has 5": {"reward": np.zeros((4, 1), np.float32)},
    "`observation` holds a non-finite value \\(row 2\\)": {"observation": np.where(np.arange(5)[:, None] == 2, np.nan, 1.0).astype(np.float32)},
    "`discount` is 0 at row 2, before the episode's last row": {"discount": np.array([[1], [1], [0], [1], [1]], np.float32)},
    "`reward` must be \\[N\\] or \\[N, 1\\]": {"reward": np.zeros((5, 2), np.float32)},
}


@pytest.mark.parametrize("message", EXORL_ERRORS)
def test_exorl_errors_name_the_file_and_field(tmp_path, message):
    _exorl_episode(tmp_path, 0, steps=4, **EXORL_ERRORS[message])
    with pytest.raises(DatasetError, match=rf"20220101T000000_0_4\.npz: {message}"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd", task_rewards=TWO_TASKS)


def test_exorl_directory_name_and_shape_errors(tmp_path):
    with pytest.raises(DatasetError, match="no episode files"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd")
    _exorl_episode(tmp_path, 0, steps=4)
    (tmp_path / "20220101T000000_0_4.npz").rename(tmp_path / "20220101T000000_0_5.npz")
    with pytest.raises(DatasetError, match="_0_5.npz: the name says 5 steps, `observation` has 5 rows"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd")
    (tmp_path / "20220101T000000_0_5.npz").unlink()
    _exorl_episode(tmp_path, 0, steps=4)
    _exorl_episode(tmp_path, 1, steps=4, observation=np.zeros((5, 3), np.float32))
    with pytest.raises(DatasetError, match=r"_1_4.npz: `observation` steps have shape \(3,\), those of 20220101T000000_0_4.npz \(2,\)"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd")
    with pytest.raises(DatasetError, match=r"`task_rewards` gave shape \(4, 1\), expected \(4, 2\)"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd", task_rewards=px.TaskRewards(("a", "b"), px.FILE_REWARD.rewards))
    with pytest.raises(ConfigError, match="max_episodes"):
        px.read_exorl_buffer(tmp_path, domain="walker", algorithm="rnd", max_episodes=0)


def test_d4rl_episodes_end_after_timeouts_and_terminals(tmp_path):
    _d4rl_file(tmp_path / "hopper.hdf5")
    data, metadata = px.read_d4rl_hdf5(tmp_path / "hopper.hdf5", env_name="hopper-medium-v2")
    e = data.episodes
    # Rows 0-2 (timeout), 3-4 (terminal), 5-6 (the file's end: truncated); each row is one step.
    np.testing.assert_array_equal(e.length, [3, 2, 2])
    np.testing.assert_array_equal(e.observation[:, :, 0], [[0, 1, 2], [3, 4, 0], [5, 6, 0]])
    np.testing.assert_array_equal(e.action[:, :, 0], [[0.5, 1.5, 2.5], [3.5, 4.5, 0], [5.5, 6.5, 0]])
    np.testing.assert_array_equal(e.reward, [[0, 10, 20], [30, 40, 0], [50, 60, 0]])
    np.testing.assert_array_equal(e.is_last, [[0, 0, 1], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(e.is_terminal, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(e.discount, [[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    assert e.features.shape == (3, 3, 0)
    assert (metadata.env_name, metadata.generator, metadata.extra["terminals_end_episodes"]) == ("d4rl:hopper-medium-v2", "d4rl:hopper.hdf5", True)


def test_d4rl_antmaze_terminals_end_no_episode_as_in_hilp(tmp_path):
    _d4rl_file(tmp_path / "ant.hdf5", rewards=(10 * np.arange(7, dtype=np.float32))[:, None])  # [N, 1] accepted, as D4RL
    data, metadata = px.read_d4rl_hdf5(tmp_path / "ant.hdf5", env_name="antmaze-large-diverse-v2", max_episodes=5)
    np.testing.assert_array_equal(data.episodes.length, [3, 4])
    np.testing.assert_array_equal(data.episodes.reward[1], [30, 40, 50, 60])
    assert not data.episodes.is_terminal.any()
    assert metadata.extra == {"terminals_end_episodes": False, "url": px.D4RL_URLS["antmaze-large-diverse-v2"]}
    split, _ = px.read_d4rl_hdf5(tmp_path / "ant.hdf5", env_name="antmaze-large-diverse-v2", terminals_end_episodes=True, max_episodes=2)
    np.testing.assert_array_equal(split.episodes.length, [3, 2])


D4RL_ERRORS = {
    "no `terminals`": {"terminals": None},
    "`rewards` has 6 rows, `observations` has 7": {"rewards": np.zeros(6, np.float32)},
    "`actions` holds a non-finite value \\(row 3\\)": {"actions": np.where(np.arange(7) == 3, np.inf, 0.0)[:, None]},
}


@pytest.mark.parametrize("message", D4RL_ERRORS)
def test_d4rl_errors_name_the_file_and_field(tmp_path, message):
    _d4rl_file(tmp_path / "d.hdf5", **D4RL_ERRORS[message])
    with pytest.raises(DatasetError, match=rf"d\.hdf5: {message}"):
        px.read_d4rl_hdf5(tmp_path / "d.hdf5", env_name="hopper-medium-v2")


def test_d4rl_without_timeouts_and_without_h5py(tmp_path, monkeypatch):
    _d4rl_file(tmp_path / "old.hdf5", timeouts=None)
    data, _ = px.read_d4rl_hdf5(tmp_path / "old.hdf5", env_name="kitchen-mixed-v0")
    np.testing.assert_array_equal(data.episodes.length, [5, 2])
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` now fails
    with pytest.raises(MissingBackendError, match=r"pip install 'jaxrl_si\[d4rl\]'"):
        px.read_d4rl_hdf5(tmp_path / "old.hdf5", env_name="kitchen-mixed-v0")


def test_ogbench_trajectories_keep_their_last_row_without_reward_or_terminal(tmp_path):
    _ogbench_file(tmp_path / "antmaze-large-navigate-v0.npz")
    data, metadata = px.read_ogbench_npz(tmp_path / "antmaze-large-navigate-v0.npz", name="antmaze-large-navigate-v0")
    e = data.episodes
    np.testing.assert_array_equal(e.length, [3, 4])
    np.testing.assert_array_equal(e.observation[:, :, 2], [[0, 2, 4, 0], [6, 8, 10, 12]])
    np.testing.assert_array_equal(e.action[1], [[3.5, -3], [4.5, -4], [5.5, -5], [6.5, -6]])
    np.testing.assert_array_equal(e.is_last, [[0, 0, 1, 0], [0, 0, 0, 1]])
    assert not e.reward.any() and not e.is_terminal.any()
    np.testing.assert_array_equal(e.discount, [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert (metadata.env_name, metadata.observation_shape, metadata.action_shape) == ("ogbench:antmaze-large-navigate-v0", (3,), (2,))
    _ogbench_file(tmp_path / "o.npz", terminals=None)
    with pytest.raises(DatasetError, match=r"o\.npz: no `terminals`"):
        px.read_ogbench_npz(tmp_path / "o.npz", name="antmaze-large-navigate-v0")


def test_urls():
    assert px.exorl_url("walker", "rnd") == "https://dl.fbaipublicfiles.com/exorl/walker/rnd.zip"
    assert px.d4rl_url("antmaze-large-diverse-v2") == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/ant_maze_v2/Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5"
    )
    assert px.ogbench_url("cube-double-play-v0", validation=True) == "https://rail.eecs.berkeley.edu/datasets/ogbench/cube-double-play-v0-val.npz"
    for bad in (lambda: px.exorl_url("walker", "sac"), lambda: px.d4rl_url("antmaze-huge-v2"), lambda: px.ogbench_url("../x")):
        with pytest.raises(ConfigError):
            bad()


@pytest.mark.parametrize("kind", ["exorl", "d4rl", "ogbench"])
def test_every_loader_round_trips_through_tfds_io(tmp_path, kind):
    if kind == "exorl":
        _exorl_episode(tmp_path / "b", 0, steps=4)
        _exorl_episode(tmp_path / "b", 1, steps=2)
        data, metadata = px.read_exorl_buffer(tmp_path / "b", domain="walker", algorithm="rnd", task_rewards=TWO_TASKS)
    elif kind == "d4rl":
        _d4rl_file(tmp_path / "d.hdf5")
        data, metadata = px.read_d4rl_hdf5(tmp_path / "d.hdf5", env_name="kitchen-partial-v0")
    else:
        _ogbench_file(tmp_path / "o.npz")
        data, metadata = px.read_ogbench_npz(tmp_path / "o.npz", name="scene-play-v0")
    write_dataset(tmp_path / "ds", data, metadata)
    read, read_metadata = read_dataset(tmp_path / "ds")
    assert read_metadata == metadata
    for name in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal", "features", "length", "policy"):
        np.testing.assert_array_equal(getattr(read.episodes, name), getattr(data.episodes, name), err_msg=name)
        assert getattr(read.episodes, name).dtype == getattr(data.episodes, name).dtype
    assert (read.segments.num_segments, read.segments.length, read.pairs.num_pairs) == (0, 1, 0)


def test_prepare_downloads_once_unpacks_and_writes(tmp_path, monkeypatch):
    """`_download` (the one untested call: no internet here) replaced by a copy of local files in the public layout."""
    _exorl_episode(tmp_path / "src" / "buffer", 0, steps=3)
    with zipfile.ZipFile(tmp_path / "rnd.zip", "w") as archive:  # as the ExORL zip: buffer/ at its top
        archive.write(tmp_path / "src" / "buffer" / "20220101T000000_0_3.npz", "buffer/20220101T000000_0_3.npz")
    _d4rl_file(tmp_path / "d.hdf5")
    _ogbench_file(tmp_path / "o.npz")
    sources = {"rnd.zip": tmp_path / "rnd.zip", "kitchen_microwave_kettle_light_slider-v0.hdf5": tmp_path / "d.hdf5", "scene-play-v0.npz": tmp_path / "o.npz"}
    fetched = []

    def download(url, target):
        fetched.append(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sources[url.rsplit("/", 1)[1]].read_bytes())
        return target

    monkeypatch.setattr(px, "_download", download)
    downloads = tmp_path / "downloads"
    roots = [
        px.prepare_exorl(tmp_path / "exorl", "walker", "rnd", download_dir=downloads),
        px.prepare_d4rl(tmp_path / "d4rl", "kitchen-partial-v0", download_dir=downloads),
        px.prepare_ogbench(tmp_path / "ogbench", "scene-play-v0", download_dir=downloads),
    ]
    assert (downloads / "walker" / "rnd" / "buffer" / "20220101T000000_0_3.npz").is_file()
    assert not (downloads / "walker" / "rnd.zip").exists()
    assert fetched == [px.exorl_url("walker", "rnd"), px.d4rl_url("kitchen-partial-v0"), px.ogbench_url("scene-play-v0")]
    assert [read_dataset(root.parent)[1].env_name for root in roots] == ["exorl:walker", "d4rl:kitchen-partial-v0", "ogbench:scene-play-v0"]
    px.prepare_exorl(tmp_path / "exorl", "walker", "rnd", download_dir=downloads, version="1.1.0")
    px.prepare_d4rl(tmp_path / "d4rl", "kitchen-partial-v0", download_dir=downloads, version="1.1.0")
    assert len(fetched) == 3  # the files found under download_dir are not fetched again
