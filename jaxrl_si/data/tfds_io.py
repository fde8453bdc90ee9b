"""Offline datasets on disk: TFDS `array_record` files, one complete version per snapshot.

A dataset directory holds versions (`1.0.0`, `1.1.0`, ...; iterated self-improvement writes one
per iteration, each complete on its own). A version is one TFDS dataset, `offline_preferences`,
with three builder configs, one example per row (RLDS layout, Ramos et al. 2021, arXiv
2111.02767):

    <directory>/<version>/offline_preferences/episodes/<version>/   every `Episodes` step field
        as a `[T, ...]` tensor, `length`, `policy`, `episode_id`; the `DatasetMetadata` in the
        TFDS `metadata.json` (`builder.info.metadata`)
    <directory>/<version>/offline_preferences/segments/<version>/   `episode`, `start`, `segment_id`
    <directory>/<version>/offline_preferences/pairs/<version>/      `first`, `second`, `label`, `pair_id`
    <directory>/<version>/manifest.json                             rows per table, size of every file

A table with no rows (e.g. no fixed pairs when pairs are drawn densely) has no config directory:
TFDS refuses empty splits; the manifest says 0 rows.

Writing is all-or-nothing: everything goes into a hidden `.incomplete-<host>-<pid>-<hex>`
directory next to the target, which is renamed to `<version>` once the manifest is written.
An exception removes it; a killed writer leaves it hidden, never listed nor read, and the next
`write_dataset` into the directory removes it once its process is gone. Reading checks every
file of the manifest (a deleted or truncated shard is an error naming it), then the arrays
against the metadata (dtype, shape, index ranges, labels in [0, 1]), so a bad file fails on
read with its path, never later inside a jitted update.

Files are read with `tfds.builder_from_directory(...).as_data_source()` (random access, no
TensorFlow) in chunks of `_CHUNK` rows into preallocated numpy arrays: `read_dataset` returns
host `OfflineData`; callers `jax.device_put` it once. Segments stay views (episode, start), so
memory is one copy of the steps. Neither writing nor reading imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import jax
import numpy as np
import tensorflow_datasets as tfds

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
from jaxrl_si.envs import Env

DATASET_NAME = "offline_preferences"
MANIFEST = "manifest.json"
_INCOMPLETE = ".incomplete-"
_CHUNK = 1024  # rows per `__getitems__` call

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


def _json_dicts(name: str, dicts) -> tuple[dict, ...]:
    """`dicts` as JSON reads them back (tuples become lists), so a round trip compares equal."""
    try:
        return tuple(json.loads(json.dumps(dict(d))) for d in dicts)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"`{name}` must be JSON-able dicts: {error}") from None


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

    All or nothing (see the module docstring); an existing version is never overwritten.
    """
    data = jax.tree.map(np.asarray, data)
    check_data(data, metadata, where="write_dataset(data)")
    directory, version = Path(directory), _version(version)
    target = directory / version
    if target.exists():
        raise DatasetError(f"{target} exists; a version is an immutable snapshot: write a new version")
    directory.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(directory)
    staging = directory / f"{_INCOMPLETE}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        rows = {}
        for kind, columns in _tables(data).items():
            rows[kind] = len(next(iter(columns.values())))
            if rows[kind]:
                _write_table(staging, kind, version, columns, metadata.to_json() if kind == "episodes" else None)
        shutil.rmtree(staging / "downloads", ignore_errors=True)
        _write_manifest(staging, rows)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def versions(directory) -> list[str]:
    """The complete versions in `directory`, oldest first (`[]` when there are none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p.name for p in directory.iterdir() if _is_version(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=tfds.core.Version)


def read_dataset(directory, *, version: str | None = None, expect: Env | Expected | None = None) -> tuple[OfflineData, DatasetMetadata]:
    """Read one version (default: the latest complete one) as host numpy `OfflineData` and its metadata.

    `expect` (an `Env` or `Expected`) is compared with the dataset's observation and action
    shapes. Every error is a `DatasetError` naming the file or field at fault.
    """
    root = _version_dir(Path(directory), version)
    rows = _check_files(root)
    metadata = _read_metadata(root)
    _check_expected(metadata, Expected.of(expect) if isinstance(expect, Env) else expect, where=str(root))
    tables = {kind: _read_table(root, kind, rows[kind]) for kind in DTYPES}
    data = OfflineData(
        Episodes(**tables["episodes"]),
        Segments(**tables["segments"], length=metadata.segment_length),
        Pairs(**tables["pairs"]),
    )
    check_data(data, metadata, where=str(root))
    return data, metadata


def check_data(data: OfflineData, metadata: DatasetMetadata, *, where: str) -> None:
    """Raise `DatasetError` naming the first column whose dtype, shape or values do not fit."""
    episodes, segments, pairs = data.episodes, data.segments, data.pairs
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


class _TableBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One table of a version as a TFDS builder config: a `train` split, one example per row, unshuffled."""

    # No checksums file to look up next to this module (it downloads nothing). TFDS 4.9.10 looks
    # for one through `importlib_resources`, which it requires only on Python < 3.9, so the
    # lookup fails for a builder defined in an installed package.
    code_path = None

    BUILDER_CONFIGS: ClassVar = [tfds.core.BuilderConfig(name=kind, description=text) for kind, text in _DESCRIPTIONS.items()]

    def __init__(self, *, kind: str, version: str, columns: dict[str, np.ndarray], metadata: dict | None, data_dir: Path):
        self.name = DATASET_NAME
        self.VERSION = tfds.core.Version(version)  # per instance: one TFDS version per snapshot
        # `<kind>_id` = row index: the order check on read (TFDS keeps key order when unshuffled).
        self._columns = {**columns, _id(kind): np.arange(len(next(iter(columns.values()))), dtype=np.int32)}
        self._metadata = metadata
        super().__init__(data_dir=data_dir, config=kind, version=version, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {name: tfds.features.Tensor(shape=column.shape[1:], dtype=column.dtype) for name, column in self._columns.items()}
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTIONS[self.builder_config.name],
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,  # else rows are stored in key-hash order
            metadata=None if self._metadata is None else tfds.core.MetadataDict(self._metadata),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(len(self._columns[_id(self.builder_config.name)])):
            yield i, {name: column[i] for name, column in self._columns.items()}


def _id(kind: str) -> str:
    return f"{kind.removesuffix('s')}_id"


def _write_table(data_dir: Path, kind: str, version: str, columns: dict[str, np.ndarray], metadata: dict | None) -> None:
    tfds.disable_progress_bar()
    builder = _TableBuilder(kind=kind, version=version, columns=columns, metadata=metadata, data_dir=data_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing ..." with the staging path
        builder.download_and_prepare(download_dir=data_dir / "downloads")


def _write_manifest(root: Path, rows: dict[str, int]) -> None:
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    (root / MANIFEST).write_text(json.dumps({"rows": rows, "files": files}, indent=1))


def _check_files(root: Path) -> dict[str, int]:
    """Every file of the manifest present with its size; the rows per table."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        files, rows = dict(manifest["files"]), dict(manifest["rows"])
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{root / MANIFEST} is not a manifest (JSON with `files` and `rows`): {error!r}") from None
    for name, size in files.items():
        path = root / name
        if not path.is_file():
            raise DatasetError(f"{path} is missing (listed in {root / MANIFEST})")
        if (actual := path.stat().st_size) != size:
            raise DatasetError(f"{path} is truncated or changed: {actual} bytes, the manifest says {size}")
    return rows


def _read_metadata(root: Path) -> DatasetMetadata:
    """The `DatasetMetadata` kept in the episodes table's TFDS metadata."""
    path = root / DATASET_NAME / "episodes" / root.name
    try:
        fields = dict(tfds.builder_from_directory(path).info.metadata or {})
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot be read: {error}") from error
    return DatasetMetadata.from_json(fields, where=str(path))


def _read_table(root: Path, kind: str, rows: int) -> dict[str, np.ndarray]:
    """Columns of one table, stacked from chunks of rows into preallocated arrays."""
    if rows == 0:
        return {name: np.zeros((0,), dtype) for name, dtype in DTYPES[kind].items()}
    path = root / DATASET_NAME / kind / root.name
    try:
        builder = tfds.builder_from_directory(path)
        source = builder.as_data_source(split="train")
        if len(source) != rows:
            raise DatasetError(f"{path}: {len(source)} rows, the manifest says {rows}")
        features = builder.info.features
        if set(features) != {*DTYPES[kind], _id(kind)}:
            raise DatasetError(f"{path}: columns {sorted(features)}, expected {sorted({*DTYPES[kind], _id(kind)})}")
        columns = {name: np.empty((rows, *features[name].shape), features[name].np_dtype) for name in features}
        for low in range(0, rows, _CHUNK):
            batch = source.__getitems__(list(range(low, min(low + _CHUNK, rows))))
            for name, column in columns.items():
                column[low : low + len(batch)] = np.stack([example[name] for example in batch])
    except DatasetError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError) as error:  # what TFDS and array_record raise for a bad file
        raise DatasetError(f"{path}: cannot be read: {error}") from error
    if not np.array_equal(columns.pop(_id(kind)), np.arange(rows)):
        raise DatasetError(f"{path}: rows are out of order (`{_id(kind)}` is not 0 .. {rows - 1})")
    return columns


def _version(version: str) -> str:
    if not _is_version(version):
        raise DatasetError(f"`version` must look like '1.2.0', got {version!r}")
    return version


def _is_version(name: str) -> bool:
    try:
        tfds.core.Version(name)
    except ValueError:
        return False
    return True


def _version_dir(directory: Path, version: str | None) -> Path:
    available = versions(directory)
    if version is None and available:
        return directory / available[-1]
    if version in available:
        return directory / version
    wanted = "complete version" if version is None else f"version {version!r}"
    raise DatasetError(f"{directory} has no {wanted}; complete versions: {available}")


def _remove_abandoned(directory: Path) -> None:
    """Remove staging directories of writers on this host that are no longer running (killed)."""
    prefix = f"{_INCOMPLETE}{socket.gethostname()}-"
    for path in directory.glob(f"{prefix}*"):
        pid = int(path.name.removeprefix(prefix).split("-")[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass
