"""Offline data: episodes of steps on device, segment views, preference pairs, and their files.

`jaxrl_si.data` itself is pure JAX (agents import it): the on-device layout (`offline`) and
on-device episode collection (`rollout`). Imported on use: `jaxrl_si.data.tables_io` (any
tables as TFDS `array_record` files, one version per snapshot; its `write_tables`,
`read_tables` and `versions` are exported here and import it when first touched),
`jaxrl_si.data.tfds_io` (`OfflineData` through `tables_io`), `jaxrl_si.data.public` (the CPL
paper's MetaWorld files), `jaxrl_si.data.public_exploratory` (ExORL, D4RL and OGBench files for
HILP) and `jaxrl_si.data.generate` (datasets from the project's own PPO
policies).
"""

import importlib

from jaxrl_si.data.offline import (
    STEP_FIELDS,
    DatasetError,
    Episodes,
    OfflineData,
    PairBatch,
    Pairs,
    SegmentBatch,
    Segments,
    check_views,
    dense_pair_batch,
    gather_segments,
    label_pairs,
    nbytes,
    pair_batch,
    segment_batch,
    segment_starts,
)
from jaxrl_si.data.rollout import acting_env, rollout_episodes

__all__ = [
    "STEP_FIELDS",
    "DatasetError",
    "Episodes",
    "OfflineData",
    "PairBatch",
    "Pairs",
    "SegmentBatch",
    "Segments",
    "acting_env",
    "check_views",
    "dense_pair_batch",
    "gather_segments",
    "label_pairs",
    "nbytes",
    "pair_batch",
    "read_tables",
    "rollout_episodes",
    "segment_batch",
    "segment_starts",
    "versions",
    "write_tables",
]

_FROM_TABLES_IO = ("read_tables", "versions", "write_tables")  # TFDS is imported on first use, not with `jaxrl_si.data`


def __getattr__(name: str):
    if name in _FROM_TABLES_IO:
        return getattr(importlib.import_module(f"{__name__}.tables_io"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
