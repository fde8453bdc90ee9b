"""Offline preference datasets on disk: `OfflineData` as three tables of `tables_io`, checked on read.

`write_dataset` / `read_dataset` store `OfflineData` through `tables_io.write_tables` /
`read_tables` (TFDS `array_record` files, one complete version per snapshot, all-or-nothing
writes, a manifest of every file) as the dataset `offline_preferences` with three tables (RLDS
layout, Ramos et al. 2021, arXiv 2111.02767) and check the arrays against a `DatasetMetadata`:

    <directory>/<version>/offline_preferences/episodes/<version>/   every `Episodes` step field
        as a `[T, ...]` tensor, `length`, `policy`, `episode_id`; the `DatasetMetadata` in the
        TFDS `metadata.json` (`builder.info.metadata`)
    <directory>/<version>/offline_preferences/segments/<version>/   `episode`, `start`, `segment_id`
    <directory>/<version>/offline_preferences/pairs/<version>/      `first`, `second`, `label`, `pair_id`
    <directory>/<version>/manifest.json      rows and columns (dtype, trailing shape) per table,
                                             size of every file

The pairs table has no rows (and so no directory) when pairs are drawn densely. Reading checks,
besides what `tables_io` checks (files, rows, row order, the columns against `DTYPES`), the
arrays against the metadata (dtype, shape, index ranges, labels in [0, 1]), so a bad file fails
on read with its path, never later inside a jitted update. `read_dataset` returns host
`OfflineData`; callers `jax.device_put` it once. Segments stay views (episode, start), so memory
is one copy of the steps. Neither writing nor reading imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrl_si.data.offline import (
    STEP_FIELDS,
    DatasetError,
    Episodes,
    OfflineData,
    Pairs,
    Segments,
    check_range,
    check_views,
)

# `MANIFEST`, `read_tables`, `versions`, `write_tables`: re-exported (callers use `tfds_io.<name>`);
# the private ones are the steps of `read_tables`, which `read_dataset` takes one by one.
from jaxrl_si.data.tables_io import (
    MANIFEST,
    _check_files,
    _json_dicts,
    _read_metadata,
    _read_tables,
    _version_dir,
    read_tables,
    versions,
    write_tables,
)
from jaxrl_si.envs import Env

__all__ = [
    "DATASET_NAME",
    "DTYPES",
    "MANIFEST",
    "DatasetError",
    "DatasetMetadata",
    "Expected",
    "check_data",
    "read_dataset",
    "read_tables",
    "versions",
    "write_dataset",
    "write_tables",
]

DATASET_NAME = "offline_preferences"

_F32, _BOOL, _I32 = np.dtype(np.float32), np.dtype(np.bool_), np.dtype(np.int32)
# Every column of every table and its dtype (the contract of `write_dataset` and `read_dataset`).
DTYPES: dict[str, dict[str, np.dtype]] = {
    "episodes": {**{name: _BOOL if name.startswith("is_") else _F32 for name in STEP_FIELDS}, "length": _I32, "policy": _I32},
    "segments": {"episode": _I32, "start": _I32},
    "pairs": {"first": _I32, "second": _I32, "label": _F32},
}
_DESCRIPTIONS = {
    "episodes": "One example per episode: every step field padded to [T, ...], `length` real steps.",
    "segments": "One example per segment view: steps start .. start + L - 1 of `episode` (L in the metadata).",
    "pairs": "One example per labelled pair of segment indices: label = P(first > second) in [0, 1].",
}


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What a dataset is: its env and spaces, how it was made, and the segment length of its views.

    Stored as JSON in the episodes table's TFDS metadata; lists come back as tuples, so a
    round trip compares equal.
    """

    env_name: str  # e.g. "gymnax:Pendulum-v1"
    observation_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    action_low: tuple[float, ...]  # bounds of the stored actions, flattened (e.g. -1 after RescaleAction)
    action_high: tuple[float, ...]
    feature_names: tuple[str, ...]  # the K reward features of `Episodes.features` (empty: K = 0)
    segment_length: int  # L of every segment view
    discount: float  # γ_A of `oracle_advantage` (data.generate); the task's γ where the data has no advantages
    policies: tuple[dict, ...]  # `Episodes.policy` indexes this: e.g. {"stage", "env_steps", "mean_return"}
    action_noise: float = 0.0  # std of the Gaussian noise added to the policies' actions
    seed: int | None = None
    oracle: str = ""  # the oracle that labelled the pairs
    pair_mode: str = "sparse"  # "sparse": fixed labelled pairs; "dense": pairs drawn and labelled per batch
    generator: str = ""  # what made the data
    notes: str = ""
    extra: dict = dataclasses.field(default_factory=dict)  # anything else the generator records (JSON-able)

    def __post_init__(self):
        normalised = {
            "observation_shape": tuple(int(d) for d in self.observation_shape),
            "action_shape": tuple(int(d) for d in self.action_shape),
            "action_low": tuple(float(x) for x in self.action_low),
            "action_high": tuple(float(x) for x in self.action_high),
            "feature_names": tuple(str(n) for n in self.feature_names),
            "segment_length": int(self.segment_length),
            "discount": float(self.discount),
            "policies": _json_dicts("policies", self.policies),
            "extra": _json_dicts("extra", (self.extra,))[0],
            "action_noise": float(self.action_noise),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)  # frozen: normalised once, here
        for name in ("action_low", "action_high"):
            if len(getattr(self, name)) != int(np.prod(self.action_shape)):
                raise DatasetError(f"`{name}` has {len(getattr(self, name))} bounds for action shape {self.action_shape}")
        if self.segment_length < 1:
            raise DatasetError(f"`segment_length` must be >= 1, got {self.segment_length}")
        if self.pair_mode not in ("sparse", "dense"):
            raise DatasetError(f"`pair_mode` must be 'sparse' or 'dense', got {self.pair_mode!r}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, fields: Mapping[str, Any], *, where: str) -> DatasetMetadata:
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if unknown := set(fields) - names:
            raise DatasetError(f"{where}: unknown metadata fields {sorted(unknown)}")
        if missing := required - set(fields):
            raise DatasetError(f"{where}: metadata lacks {sorted(missing)}")
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Expected:
    """Spaces the caller needs (None: not compared); `read_dataset` refuses a dataset without them."""

    observation_shape: tuple[int, ...] | None = None
    action_shape: tuple[int, ...] | None = None

    @classmethod
    def of(cls, env: Env) -> Expected:
        return cls(tuple(env.observation_shape), tuple(env.action_space.shape))


def write_dataset(directory, data: OfflineData, metadata: DatasetMetadata, *, version: str = "1.0.0") -> Path:
    """Write `data` as version `version` of the dataset in `directory`; return the version's path.

    Checked against `metadata` (`check_data`), then written by `write_tables`: all or nothing,
    an existing version is never overwritten.
    """
    data = jax.tree.map(np.asarray, data)
    check_data(data, metadata, where="write_dataset(data)")
    return write_tables(
        directory, _tables(data), dataset_name=DATASET_NAME, metadata=metadata.to_json(), descriptions=_DESCRIPTIONS, version=version
    )


def read_dataset(directory, *, version: str | None = None, expect: Env | Expected | None = None) -> tuple[OfflineData, DatasetMetadata]:
    """Read one version (default: the latest complete one) as host numpy `OfflineData` and its metadata.

    `read_tables` step by step, so that `expect` (an `Env` or `Expected`, compared with the
    dataset's observation and action shapes) refuses a dataset before its arrays are read.
    Every error is a `DatasetError` naming the file or field at fault.
    """
    root = _version_dir(Path(directory), version)
    manifest = _check_files(root)
    metadata = DatasetMetadata.from_json(_read_metadata(root, DATASET_NAME, manifest), where=str(root))
    _check_expected(metadata, Expected.of(expect) if isinstance(expect, Env) else expect, where=str(root))
    tables = _read_tables(root, DATASET_NAME, manifest, DTYPES)
    data = OfflineData(
        Episodes(**tables["episodes"]),
        Segments(**tables["segments"], length=metadata.segment_length),
        Pairs(**tables["pairs"]),
    )
    check_data(data, metadata, where=str(root))
    return data, metadata


def check_data(data: OfflineData, metadata: DatasetMetadata, *, where: str) -> None:
    """Raise `DatasetError` naming the first column whose dtype, shape or values do not fit."""
    episodes, segments = data.episodes, data.segments
    if np.ndim(episodes.reward) != 2:
        raise DatasetError(f"{where}: `episodes.reward` must be [E, T], got shape {np.shape(episodes.reward)}")
    for kind, columns in _tables(data).items():
        for name, array in columns.items():
            if array.dtype != DTYPES[kind][name]:
                raise DatasetError(f"{where}: `{kind}.{name}` must be {DTYPES[kind][name]}, got {array.dtype}")
            if array.shape != (shape := _shape(kind, name, data, metadata)):
                raise DatasetError(f"{where}: `{kind}.{name}` must have shape {shape}, got {array.shape}")
    if segments.length != metadata.segment_length:
        raise DatasetError(f"{where}: `segments.length` {segments.length} != metadata.segment_length {metadata.segment_length}")
    check_range(where, "episodes.policy", episodes.policy, 0, len(metadata.policies))
    check_views(data, where=where)


def _tables(data: OfflineData) -> dict[str, dict[str, np.ndarray]]:
    """The three tables as columns with one row per episode / segment / pair."""
    return {
        "episodes": {name: getattr(data.episodes, name) for name in DTYPES["episodes"]},
        "segments": {"episode": data.segments.episode, "start": data.segments.start},
        "pairs": {"first": data.pairs.first, "second": data.pairs.second, "label": data.pairs.label},
    }


def _shape(kind: str, name: str, data: OfflineData, metadata: DatasetMetadata) -> tuple[int, ...]:
    """The shape column `kind.name` must have: `[E, T, ...]` steps, `[E]`, `[S]` or `[P]`."""
    if kind != "episodes":
        rows = data.segments.num_segments if kind == "segments" else data.pairs.num_pairs
        return (rows,)
    steps = data.episodes.reward.shape
    trailing = {"observation": metadata.observation_shape, "action": metadata.action_shape, "features": (len(metadata.feature_names),)}
    if name in ("length", "policy"):
        return steps[:1]
    return (*steps, *trailing.get(name, ()))


def _check_expected(metadata: DatasetMetadata, expect: Expected | None, *, where: str) -> None:
    for name in ("observation_shape", "action_shape"):
        wanted = None if expect is None else getattr(expect, name)
        if wanted is not None and tuple(wanted) != getattr(metadata, name):
            raise DatasetError(f"{where}: the dataset ({metadata.env_name}) has {name} {getattr(metadata, name)}, expected {tuple(wanted)}")

