"""Offline data: episodes of steps on device, segment views, preference pairs, and their files.

`jaxrl_si.data` itself is pure JAX (agents import it); reading and writing TFDS datasets lives
in `jaxrl_si.data.tfds_io` and the generation of datasets from the project's own policies in
`jaxrl_si.data.generate`, imported on use.
"""

from jaxrl_si.data.offline import (
    STEP_FIELDS,
    Episodes,
    OfflineData,
    PairBatch,
    Pairs,
    SegmentBatch,
    Segments,
    dense_pair_batch,
    gather_segments,
    label_pairs,
    nbytes,
    pair_batch,
    segment_batch,
    segment_starts,
)

__all__ = [
    "STEP_FIELDS",
    "Episodes",
    "OfflineData",
    "PairBatch",
    "Pairs",
    "SegmentBatch",
    "Segments",
    "dense_pair_batch",
    "gather_segments",
    "label_pairs",
    "nbytes",
    "pair_batch",
    "segment_batch",
    "segment_starts",
]
