"""Offline data: episodes of steps on device, segment views, preference pairs, and their files.

`jaxrl_si.data` itself is pure JAX (agents import it): the on-device layout (`offline`) and
on-device episode collection (`rollout`). Imported on use: `jaxrl_si.data.tfds_io` (TFDS
`array_record` files, one version per snapshot), `jaxrl_si.data.public` (the CPL paper's
MetaWorld files) and `jaxrl_si.data.generate` (datasets from the project's own PPO policies).
"""

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
    "rollout_episodes",
    "segment_batch",
    "segment_starts",
]
