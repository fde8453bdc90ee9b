"""Datasets of tables on disk: TFDS `array_record` files, one complete version per snapshot.

`write_tables` / `read_tables` store any set of tables (a table: columns of numpy arrays with one
shared leading row axis) as one TFDS dataset `dataset_name` per version, one builder config per
table, one example per row, every column a `tfds.features.Tensor` of its trailing shape and dtype
(bool, int, uint or float); a JSON-able metadata dict is kept in the TFDS `metadata.json` of the
first table with rows:

    <directory>/<version>/<dataset_name>/<table>/<version>/   the TFDS files of one table: its
        columns and `<table singular>_id`, the row index (checked on read: row order)
    <directory>/<version>/manifest.json      rows and columns (dtype, trailing shape) per table,
                                             size of every file

A directory holds versions (`1.0.0`, `1.1.0`, ...; iterated self-improvement writes one per
iteration, each complete on its own); `versions` lists the complete ones. A table with no rows
has no config directory: TFDS refuses empty splits; the manifest gives its rows (0) and columns.
Manifests written before columns were recorded read back with the caller's `dtypes` and shape
`[0]`.

Writing is all-or-nothing: everything goes into a hidden `.incomplete-<host>-<pid>-<hex>`
directory next to the target, which is renamed to `<version>` once the manifest is written.
An exception removes it; a killed writer leaves it hidden, never listed nor read, and the next
write into the directory removes it once its process is gone. Reading checks every file of the
manifest (a deleted or truncated shard is an error naming it), the rows and row order, and the
columns against the caller's `dtypes`, so a bad file fails on read with its path.

Files are read with `tfds.builder_from_directory(...).as_data_source()` (random access, no
TensorFlow) in chunks of `_CHUNK` rows into preallocated numpy arrays. Neither writing nor
reading imports TensorFlow. `jaxrl_si.data.tfds_io` stores `OfflineData` through this layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from jaxrl_si.data.offline import DatasetError

MANIFEST = "manifest.json"
_INCOMPLETE = ".incomplete-"
_CHUNK = 1024  # rows per `__getitems__` call


def write_tables(
    directory,
    tables: Mapping[str, Mapping[str, np.ndarray]],
    *,
    dataset_name: str,
    metadata: Mapping[str, Any],
    descriptions: Mapping[str, str] | None = None,
    version: str = "1.0.0",
) -> Path:
    """Write `tables` as version `version` of the TFDS dataset `dataset_name` in `directory`; return the version's path.

    `tables[name][column]` is `[rows, ...]`, rows shared by a table's columns; a table is a
    builder config, a row an example. `metadata` (JSON-able) goes into the TFDS metadata of the
    first table with rows (at least one needs rows). All or nothing (see the module
    docstring); an existing version is never overwritten.
    """
    tables = _checked_tables(tables, dataset_name)
    metadata = _json_dicts("metadata", (metadata,))[0]
    descriptions = dict(descriptions or {})
    if unknown := set(descriptions) - set(tables):
        raise DatasetError(f"`descriptions` of unknown tables {sorted(unknown)}; tables: {list(tables)}")
    directory, version = Path(directory), _version(version)
    target = directory / version
    if target.exists():
        raise DatasetError(f"{target} exists; a version is an immutable snapshot: write a new version")
    rows = {name: len(next(iter(columns.values()))) for name, columns in tables.items()}
    holder = next((name for name, count in rows.items() if count), None)  # of the metadata
    if holder is None:
        raise DatasetError(f"every table of {dataset_name!r} has 0 rows; the metadata needs one with rows")
    directory.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(directory)
    staging = directory / f"{_INCOMPLETE}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for name, columns in tables.items():
            if rows[name]:
                description, table_metadata = descriptions.get(name, ""), metadata if name == holder else None
                _write_table(staging, name, dataset_name, version, columns, description, table_metadata)
        shutil.rmtree(staging / "downloads", ignore_errors=True)
        _write_manifest(staging, rows, {name: _spec(columns) for name, columns in tables.items()})
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_tables(
    directory, *, dataset_name: str, version: str | None = None, dtypes: Mapping[str, Mapping[str, np.dtype]] | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read one version (default: the latest complete one): its tables, in written order, and its metadata.

    `dtypes` (optional): the tables, each with exactly these columns of these dtypes; checked
    before any row is read. Every error is a `DatasetError` naming the file or field at fault.
    """
    root = _version_dir(Path(directory), version)
    manifest = _check_files(root)
    metadata = _read_metadata(root, dataset_name, manifest)
    return _read_tables(root, dataset_name, manifest, dtypes), metadata


def versions(directory) -> list[str]:
    """The complete versions in `directory`, oldest first (`[]` when there are none)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p.name for p in directory.iterdir() if _is_version(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=tfds.core.Version)



def _json_dicts(name: str, dicts) -> tuple[dict, ...]:
    """`dicts` as JSON reads them back (tuples become lists), so a round trip compares equal."""
    try:
        return tuple(json.loads(json.dumps(dict(d))) for d in dicts)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"`{name}` must be JSON-able dicts: {error}") from None


_NAME = re.compile(r"[a-z][a-z0-9_]*")  # dataset and table names: directory names TFDS accepts
_KINDS = "biuf"  # bool, int, uint, float: what a `tfds.features.Tensor` stores and `np.zeros` rebuilds


def _checked_tables(tables: Mapping[str, Mapping[str, np.ndarray]], dataset_name: str) -> dict[str, dict[str, np.ndarray]]:
    """`tables` as host arrays; `DatasetError` naming the first name, column or row count that does not fit."""
    for name in (dataset_name, *tables):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise DatasetError(f"dataset and table names must match {_NAME.pattern}, got {name!r}")
    if not tables:
        raise DatasetError(f"no tables to write for {dataset_name!r}")
    checked = {}
    for name, columns in tables.items():
        checked[name] = {column: np.asarray(array) for column, array in columns.items()}
        if not checked[name]:
            raise DatasetError(f"table `{name}` has no columns")
        for column, array in checked[name].items():
            if not isinstance(column, str) or not column.isidentifier() or column == _id(name):
                raise DatasetError(f"`{name}.{column}`: a column name must be an identifier other than {_id(name)!r}")
            if array.ndim == 0 or array.dtype.kind not in _KINDS:
                raise DatasetError(f"`{name}.{column}` must be a [rows, ...] bool, int or float array, got {array.dtype} {array.shape}")
        if len({len(array) for array in checked[name].values()}) > 1:
            raise DatasetError(f"the columns of `{name}` have different rows: { {c: len(a) for c, a in checked[name].items()} }")
    return checked


def _spec(columns: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """What the manifest records of each column: dtype and trailing (per row) shape."""
    return {name: {"dtype": array.dtype.name, "shape": list(array.shape[1:])} for name, array in columns.items()}


class _TableBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One table of a version as a TFDS builder config: a `train` split, one example per row, unshuffled."""

    # No checksums file to look up next to this module (it downloads nothing). TFDS 4.9.10 looks
    # for one through `importlib_resources`, which it requires only on Python < 3.9, so the
    # lookup fails for a builder defined in an installed package.
    code_path = None

    # None fixed: each instance gets its own config, named by the table (see `_write_table`).
    BUILDER_CONFIGS: ClassVar = []

    def __init__(self, dataset_name: str, table: str, description: str, version: str, columns, metadata: dict | None, data_dir: Path):
        self.name = dataset_name
        self.VERSION = tfds.core.Version(version)  # per instance: one TFDS version per snapshot
        # `<table>_id` = row index: the order check on read (TFDS keeps key order when unshuffled).
        self._columns = {**columns, _id(table): np.arange(len(next(iter(columns.values()))), dtype=np.int32)}
        self._metadata = metadata
        config = tfds.core.BuilderConfig(name=table, description=description)
        super().__init__(data_dir=data_dir, config=config, version=version, file_format="array_record")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {name: tfds.features.Tensor(shape=column.shape[1:], dtype=column.dtype) for name, column in self._columns.items()}
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.builder_config.description,
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


class _NoCustomConfigWarning(logging.Filter):
    """Drops TFDS's "Using custom data configuration": every config here is custom by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using custom data configuration")


def _id(table: str) -> str:
    return f"{table.removesuffix('s')}_id"


def _write_table(data_dir: Path, table: str, dataset_name: str, version: str, columns, description: str, metadata: dict | None) -> None:
    tfds.disable_progress_bar()
    absl_logger, quiet = logging.getLogger("absl"), _NoCustomConfigWarning()
    absl_logger.addFilter(quiet)
    try:
        builder = _TableBuilder(dataset_name, table, description, version, columns, metadata, data_dir)
    finally:
        absl_logger.removeFilter(quiet)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing ..." with the staging path
        builder.download_and_prepare(download_dir=data_dir / "downloads")


def _write_manifest(root: Path, rows: dict[str, int], columns: dict[str, dict]) -> None:
    files = {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    (root / MANIFEST).write_text(json.dumps({"rows": rows, "columns": columns, "files": files}, indent=1))


@dataclasses.dataclass(frozen=True)
class _Manifest:
    """What `manifest.json` says of a version (its files are checked by `_check_files`)."""

    path: Path
    rows: dict[str, int]  # per table, in written order
    columns: dict[str, dict[str, tuple[np.dtype, tuple[int, ...]]]] | None  # dtype and trailing shape; None: not recorded (older writers)


def _check_files(root: Path) -> _Manifest:
    """Every file of the manifest present with its size; the rows (and columns) per table."""
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files, rows = dict(manifest["files"]), {name: int(count) for name, count in dict(manifest["rows"]).items()}
        columns = manifest.get("columns")
        if columns is not None:
            columns = {t: {c: (np.dtype(s["dtype"]), tuple(s["shape"])) for c, s in dict(cs).items()} for t, cs in dict(columns).items()}
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path} is not a manifest (JSON with `files` and `rows`): {error!r}") from None
    for name, size in files.items():
        file = root / name
        if not file.is_file():
            raise DatasetError(f"{file} is missing (listed in {path})")
        if (actual := file.stat().st_size) != size:
            raise DatasetError(f"{file} is truncated or changed: {actual} bytes, the manifest says {size}")
    return _Manifest(path, rows, columns)


def _read_metadata(root: Path, dataset_name: str, manifest: _Manifest) -> dict[str, Any]:
    """The metadata dict kept in the TFDS metadata of the first table with rows."""
    holder = next((name for name, count in manifest.rows.items() if count), None)
    if holder is None:
        raise DatasetError(f"{manifest.path}: every table has 0 rows; none holds the metadata")
    path = root / dataset_name / holder / root.name
    try:
        return dict(tfds.builder_from_directory(path).info.metadata or {})
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetError(f"{path}: cannot be read: {error}") from error


def _read_tables(root: Path, dataset_name: str, manifest: _Manifest, dtypes: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """Every table of the manifest, in its order; with `dtypes`, exactly those tables and columns."""
    if dtypes is not None and set(dtypes) != set(manifest.rows):
        raise DatasetError(f"{manifest.path}: tables {sorted(manifest.rows)}, expected {sorted(dtypes)}")
    read = {}
    for table, rows in manifest.rows.items():
        expected = None if dtypes is None else {column: np.dtype(dtype) for column, dtype in dtypes[table].items()}
        recorded = None if manifest.columns is None else manifest.columns.get(table)
        read[table] = _read_table(root / dataset_name / table / root.name, table, rows, recorded, expected, manifest.path)
    return read


def _read_table(path: Path, table: str, rows: int, recorded, expected: dict[str, np.dtype] | None, manifest: Path) -> dict[str, np.ndarray]:
    """Columns of one table, stacked from chunks of rows into preallocated arrays."""
    if rows == 0:  # no files: the columns are the manifest's (or, before it recorded them, the caller's)
        if recorded is None and expected is None:
            raise DatasetError(f"{manifest}: `{table}` has 0 rows and no recorded columns; pass `dtypes`")
        specs = recorded if recorded is not None else {column: (dtype, ()) for column, dtype in expected.items()}
        _check_columns(manifest, table, specs, expected)
        return {column: np.zeros((0, *shape), dtype) for column, (dtype, shape) in specs.items()}
    try:
        builder = tfds.builder_from_directory(path)
        source = builder.as_data_source(split="train")
        if len(source) != rows:
            raise DatasetError(f"{path}: {len(source)} rows, the manifest says {rows}")
        features = builder.info.features
        specs = {name: (np.dtype(features[name].np_dtype), tuple(features[name].shape)) for name in features if name != _id(table)}
        if _id(table) not in features:
            raise DatasetError(f"{path}: no `{_id(table)}` column (the row order)")
        if recorded is not None and specs != recorded:
            raise DatasetError(f"{path}: columns {_describe(specs)}, the manifest says {_describe(recorded)}")
        _check_columns(path, table, specs, expected)
        columns = {name: np.empty((rows, *features[name].shape), features[name].np_dtype) for name in features}
        for low in range(0, rows, _CHUNK):
            batch = source.__getitems__(list(range(low, min(low + _CHUNK, rows))))
            for name, column in columns.items():
                column[low : low + len(batch)] = np.stack([example[name] for example in batch])
    except DatasetError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError) as error:  # what TFDS and array_record raise for a bad file
        raise DatasetError(f"{path}: cannot be read: {error}") from error
    if not np.array_equal(columns.pop(_id(table)), np.arange(rows)):
        raise DatasetError(f"{path}: rows are out of order (`{_id(table)}` is not 0 .. {rows - 1})")
    return columns


def _check_columns(where: Path, table: str, specs: dict[str, tuple[np.dtype, tuple[int, ...]]], expected: dict[str, np.dtype] | None) -> None:
    """`DatasetError` unless `table` has exactly the `expected` columns and dtypes (None: any)."""
    if expected is None:
        return
    if set(specs) != set(expected):
        raise DatasetError(f"{where}: `{table}` has columns {sorted(specs)}, expected {sorted(expected)}")
    for column, (dtype, _) in specs.items():
        if dtype != expected[column]:
            raise DatasetError(f"{where}: `{table}.{column}` is {dtype}, expected {expected[column]}")


def _describe(specs: dict[str, tuple[np.dtype, tuple[int, ...]]]) -> str:
    return ", ".join(f"{name}: {dtype}{list(shape)}" for name, (dtype, shape) in specs.items()) or "none"


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
