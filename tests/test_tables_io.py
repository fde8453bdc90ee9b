"""Any tables on disk (`write_tables` / `read_tables`): round trip, empty tables, versions, bad files, interrupted writes."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxrl_si import data as data_package
from jaxrl_si.data import tables_io
from jaxrl_si.data.offline import DatasetError
from jaxrl_si.data.tables_io import read_tables, versions, write_tables

NAME = "sequence_samples"
METADATA = {"iteration": 3, "model": {"layers": 2, "vocab": 11}, "temperatures": [0.5, 1.0], "notes": "tiny"}
DTYPES = {
    "samples": {"tokens": np.int32, "mask": np.bool_, "reward": np.float32},
    "prompts": {"tokens": np.int32, "mask": np.bool_, "reward": np.float32},
}


def _tables(seed: int = 0, samples: int = 7, prompts: int = 3) -> dict[str, dict[str, np.ndarray]]:
    """Two tables with int32 [n, 5], bool [n, 5] and float32 [n] columns."""
    rng = np.random.default_rng(seed)

    def table(n):
        return {
            "tokens": rng.integers(0, 11, (n, 5)).astype(np.int32),
            "mask": rng.random((n, 5)) < 0.7,
            "reward": rng.normal(size=n).astype(np.float32),
        }

    return {"samples": table(samples), "prompts": table(prompts)}


def _assert_same(read: dict, written: dict) -> None:
    assert list(read) == list(written)  # tables in written order
    for table, columns in written.items():
        assert sorted(read[table]) == sorted(columns), table
        for name, array in columns.items():
            got = read[table][name]
            assert isinstance(got, np.ndarray) and got.dtype == array.dtype and got.shape == array.shape, f"{table}.{name}"
            np.testing.assert_array_equal(got, array, err_msg=f"{table}.{name}")


def _shard(root, table: str):
    (path,) = (root / NAME / table / root.name).glob("*.array_record-*")
    return path


def test_round_trip_is_exact_and_read_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(tables_io, "_CHUNK", 3)  # 7 rows: chunks of 3, 3 and 1
    tables = _tables()
    root = write_tables(tmp_path, tables, dataset_name=NAME, metadata=METADATA, descriptions={"samples": "one sample per row"})
    assert root == tmp_path / "1.0.0"
    read, metadata = read_tables(tmp_path, dataset_name=NAME, dtypes=DTYPES)
    _assert_same(read, tables)
    assert metadata == METADATA
    _assert_same(read_tables(tmp_path, dataset_name=NAME)[0], tables)  # no `dtypes`: the columns as written
    builder = tfds.builder_from_directory(root / NAME / "samples" / "1.0.0")  # an ordinary TFDS dataset
    assert (builder.name, builder.info.config_name, builder.info.config_description) == (NAME, "samples", "one sample per row")
    assert set(builder.info.features) == {"tokens", "mask", "reward", "sample_id"}
    assert len(builder.as_data_source(split="train")) == 7


def test_the_package_exports_the_table_layer():
    assert (data_package.write_tables, data_package.read_tables, data_package.versions) == (write_tables, read_tables, versions)


def test_tfds_does_not_warn_about_the_per_table_configs(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        write_tables(tmp_path, _tables(), dataset_name=NAME, metadata={})
    assert not [r for r in caplog.records if "custom data configuration" in r.getMessage()]


def test_a_table_with_no_rows_keeps_its_columns_and_the_metadata_moves_to_the_next(tmp_path):
    tables = _tables(samples=0)
    root = write_tables(tmp_path, tables, dataset_name=NAME, metadata=METADATA)
    assert not (root / NAME / "samples").exists()  # TFDS refuses empty splits
    assert json.loads((root / tables_io.MANIFEST).read_text())["rows"] == {"samples": 0, "prompts": 3}
    read, metadata = read_tables(tmp_path, dataset_name=NAME, dtypes=DTYPES)
    _assert_same(read, tables)  # tokens [0, 5] int32, mask [0, 5] bool, reward [0] float32
    assert metadata == METADATA  # kept by `prompts`, the first table with rows
    with pytest.raises(DatasetError, match="every table of 'sequence_samples' has 0 rows"):
        write_tables(tmp_path, _tables(samples=0, prompts=0), dataset_name=NAME, metadata=METADATA, version="1.1.0")


def test_a_manifest_without_columns_reads_empty_tables_with_the_callers_dtypes(tmp_path):
    root = write_tables(tmp_path, _tables(samples=0), dataset_name=NAME, metadata=METADATA)
    manifest = json.loads((root / tables_io.MANIFEST).read_text())
    del manifest["columns"]  # as written before the manifest recorded columns
    (root / tables_io.MANIFEST).write_text(json.dumps(manifest))
    read, _ = read_tables(tmp_path, dataset_name=NAME, dtypes=DTYPES)
    assert {name: (a.dtype, a.shape) for name, a in read["samples"].items()} == {
        "tokens": (np.int32, (0,)),
        "mask": (np.bool_, (0,)),
        "reward": (np.float32, (0,)),
    }
    with pytest.raises(DatasetError, match=r"manifest\.json: `samples` has 0 rows and no recorded columns; pass `dtypes`"):
        read_tables(tmp_path, dataset_name=NAME)


def test_versions_are_listed_in_order_and_read_by_version(tmp_path):
    assert versions(tmp_path) == []
    for k, version in enumerate(("1.0.0", "1.10.0", "1.2.0")):
        write_tables(tmp_path, _tables(seed=k), dataset_name=NAME, metadata={"iteration": k}, version=version)
    assert versions(tmp_path) == ["1.0.0", "1.2.0", "1.10.0"]  # numeric, not text, order
    read, metadata = read_tables(tmp_path, dataset_name=NAME)
    _assert_same(read, _tables(seed=1))
    assert metadata == {"iteration": 1}
    read, metadata = read_tables(tmp_path, dataset_name=NAME, version="1.2.0")
    _assert_same(read, _tables(seed=2))
    assert metadata == {"iteration": 2}
    with pytest.raises(DatasetError, match=r"1\.2\.0 exists"):
        write_tables(tmp_path, _tables(), dataset_name=NAME, metadata={}, version="1.2.0")
    with pytest.raises(DatasetError, match=r"no version '1\.3\.0'"):
        read_tables(tmp_path, dataset_name=NAME, version="1.3.0")


def test_a_truncated_shard_is_named(tmp_path):
    root = write_tables(tmp_path, _tables(), dataset_name=NAME, metadata=METADATA)
    shard = _shard(root, "prompts")
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(DatasetError, match=rf"{shard} is truncated or changed"):
        read_tables(tmp_path, dataset_name=NAME)


def test_a_missing_shard_is_named(tmp_path):
    root = write_tables(tmp_path, _tables(), dataset_name=NAME, metadata=METADATA)
    shard = _shard(root, "samples")
    shard.unlink()
    with pytest.raises(DatasetError, match=rf"{shard} is missing"):
        read_tables(tmp_path, dataset_name=NAME)


@pytest.mark.parametrize("samples", [7, 0], ids=["with rows", "empty"])
def test_columns_other_than_expected_are_named(tmp_path, samples):
    write_tables(tmp_path, _tables(samples=samples), dataset_name=NAME, metadata=METADATA)
    wrong_dtype = {**DTYPES, "samples": {**DTYPES["samples"], "reward": np.float64}}
    with pytest.raises(DatasetError, match=r"`samples.reward` is float32, expected float64"):
        read_tables(tmp_path, dataset_name=NAME, dtypes=wrong_dtype)
    missing = {**DTYPES, "samples": {**DTYPES["samples"], "logits": np.float32}}
    with pytest.raises(DatasetError, match=r"`samples` has columns \['mask', 'reward', 'tokens'\], expected \['logits', 'mask'"):
        read_tables(tmp_path, dataset_name=NAME, dtypes=missing)
    with pytest.raises(DatasetError, match=r"manifest\.json: tables \['prompts', 'samples'\], expected \['samples'\]"):
        read_tables(tmp_path, dataset_name=NAME, dtypes={"samples": DTYPES["samples"]})


def test_a_manifest_that_disagrees_with_the_files_is_refused(tmp_path):
    root = write_tables(tmp_path, _tables(), dataset_name=NAME, metadata=METADATA)
    manifest = json.loads((root / tables_io.MANIFEST).read_text())
    manifest["columns"]["prompts"]["reward"]["shape"] = [2]
    (root / tables_io.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"prompts/1\.0\.0: columns .*reward: float32\[\].*, the manifest says .*reward: float32\[2\]"):
        read_tables(tmp_path, dataset_name=NAME)


def test_an_exception_mid_write_leaves_nothing_readable(tmp_path, monkeypatch):
    real = tables_io._write_table

    def fail_on_prompts(data_dir, table, *args):
        if table == "prompts":
            raise RuntimeError("disk full")
        real(data_dir, table, *args)

    monkeypatch.setattr(tables_io, "_write_table", fail_on_prompts)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tables(tmp_path, _tables(), dataset_name=NAME, metadata=METADATA)
    assert versions(tmp_path) == [] and list(tmp_path.iterdir()) == []  # `samples` was written, then removed
    with pytest.raises(DatasetError, match="has no complete version"):
        read_tables(tmp_path, dataset_name=NAME)


BAD = {
    "names must match": lambda t: ({"Samples": t["samples"]}, {}),
    "`samples.sample_id`: a column name must be an identifier other than 'sample_id'": lambda t: (
        {"samples": {**t["samples"], "sample_id": t["samples"]["reward"]}},
        {},
    ),
    "`samples.text` must be a \\[rows, ...\\] bool, int or float array": lambda t: (
        {"samples": {**t["samples"], "text": np.array(["a"] * 7)}},
        {},
    ),
    "the columns of `samples` have different rows": lambda t: ({"samples": {**t["samples"], "reward": np.zeros(6, np.float32)}}, {}),
    "table `samples` has no columns": lambda t: ({"samples": {}}, {}),
    "`metadata` must be JSON-able": lambda t: (t, {"model": object()}),
}


@pytest.mark.parametrize("message", BAD)
def test_bad_tables_are_refused_before_anything_is_written(tmp_path, message):
    tables, metadata = BAD[message](_tables())
    with pytest.raises(DatasetError, match=message):
        write_tables(tmp_path, tables, dataset_name=NAME, metadata=metadata)
    assert list(tmp_path.iterdir()) == []
