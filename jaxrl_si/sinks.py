"""Metric sinks for long runs: JSONL and TensorBoard in the run directory.

A metric row is a flat dict: the labels of `ROW_LABELS` that apply (which member, setting, seed,
iteration, update, and always `env_steps`), then the metrics, scalars under namespaced keys such
as `episode/return` or `loss/value`. `metric_row` builds one; the loop writes them and
`MetricWriter` reads the labels back from the same definition. No statistics here (see
`jaxrl_si.metrics`) and no plots (see `jaxrl_si.plots`).

Run directories may be local or on Cloud Storage (`jaxrl_si.paths`). A Cloud Storage object is
written whole when its file is closed, so on `gs://` `metrics.jsonl` appears when the writer
closes (a resumed run rewrites it from the checkpoint's history, so a killed run loses nothing);
TensorBoard needs the `google-cloud-storage` package there and is skipped with a warning
without it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping

from jaxrl_si.paths import run_path

ROW_LABELS = ("member", "setting", "seed", "iteration", "update", "env_steps")  # bookkeeping keys, in row order


def metric_row(labels: Mapping[str, int], metrics: Mapping[str, float]) -> dict:
    """One row: the labels (keys of `ROW_LABELS`, `env_steps` required) in their order, then the metrics.

    Raises `ValueError` for a label that is not in `ROW_LABELS` or a metric that reuses a label's name.
    """
    unknown = set(labels) - set(ROW_LABELS)
    if unknown or "env_steps" not in labels:
        raise ValueError(f"row labels must be among {ROW_LABELS} and include env_steps, got {sorted(labels)}")
    clash = set(metrics) & set(ROW_LABELS)
    if clash:
        raise ValueError(f"metric names {sorted(clash)} clash with row labels")
    return {**{name: labels[name] for name in ROW_LABELS if name in labels}, **metrics}


class MetricWriter:
    """Metric rows to `run_dir/metrics.jsonl` and to TensorBoard (`run_dir/tb`).

    TensorBoard uses tensorboardX (no TensorFlow needed). Rows carrying a `group` key (e.g.
    `member` or `seed`) go to the tag `<group><k>/<key>`; `write_summary` writes cross-member
    aggregates under the plain key.

    A fresh writer truncates `metrics.jsonl`. A resumed one (`resume_env_steps` set) also
    truncates it (the caller replays the restored history with `write(..., tensorboard=False)`)
    and opens TensorBoard with `purge_step`, so events logged after the checkpoint by the killed
    run are discarded rather than shown twice. An inactive writer (`active=False`: the other
    processes of a multi-process run, whose rows the main process writes) touches no file.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        group: str = "seed",
        tensorboard: bool = True,
        resume_env_steps: int | None = None,
        active: bool = True,
    ):
        if group not in ROW_LABELS:
            raise ValueError(f"group must be one of the row labels {ROW_LABELS}, got {group!r}")
        self.run_dir = run_path(run_dir)
        self.group = group
        self._jsonl = self._tb = None
        if not active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("w", encoding="utf-8")
        if tensorboard:
            self._tb = _summary_writer(self.run_dir / "tb", None if resume_env_steps is None else resume_env_steps + 1)

    def write(self, rows: Iterable[Mapping[str, float]], *, tensorboard: bool = True) -> None:
        """Write rows (each with `env_steps`) to JSONL and, per group, to TensorBoard."""
        if self._jsonl is None:
            return
        for row in rows:
            clean = {k: int(v) if k in ROW_LABELS else _jsonable(v) for k, v in row.items()}
            self._jsonl.write(json.dumps(clean) + "\n")
            if self._tb is not None and tensorboard:
                prefix = f"{self.group}{int(row[self.group])}/" if self.group in row else ""
                for key, value in clean.items():
                    if key not in ROW_LABELS and value is not None:
                        self._tb.add_scalar(prefix + key, value, int(row["env_steps"]))
        self._jsonl.flush()

    def write_summary(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        """Cross-seed aggregate scalars, TensorBoard only."""
        if self._tb is not None:
            for key, value in metrics.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, float(value), int(env_steps))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer(directory, purge_step: int | None):
    """A tensorboardX `SummaryWriter` in `directory`, or None with a warning when it cannot write there.

    tensorboardX writes `gs://` event files only with `google-cloud-storage` installed (it
    raises `ImportError` otherwise); the run goes on without TensorBoard rather than fail.
    """
    from tensorboardX import SummaryWriter, record_writer

    if os.fspath(directory).startswith("gs://") and not record_writer.GCS_ENABLED:
        warnings.warn(f"no TensorBoard events in {directory}: tensorboardX writes to gs:// only with google-cloud-storage installed", stacklevel=3)
        return None
    return SummaryWriter(os.fspath(directory), purge_step=purge_step)


def _jsonable(value) -> float | None:
    """A scalar as a JSON number; NaN / inf (e.g. no episode ended) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All rows of a metrics.jsonl file (local or `gs://`)."""
    with run_path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


