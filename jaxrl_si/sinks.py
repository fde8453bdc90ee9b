"""Metric sinks for long runs: JSONL and TensorBoard in the run directory.

A metric row is a flat dict: the labels of `ROW_LABELS` that apply (which member, setting, seed,
iteration, update, and always `env_steps`), then the metrics, scalars under namespaced keys such
as `episode/return` or `loss/value`. `metric_row` builds one; the loop writes them and
`MetricWriter` reads the labels back from the same definition. No statistics here (see
`jaxrl_si.metrics`) and no plots (see `jaxrl_si.plots`).
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Mapping

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
    run are discarded rather than shown twice.
    """

    def __init__(
        self,
        run_dir: str | pathlib.Path,
        *,
        group: str = "seed",
        tensorboard: bool = True,
        resume_env_steps: int | None = None,
    ):
        if group not in ROW_LABELS:
            raise ValueError(f"group must be one of the row labels {ROW_LABELS}, got {group!r}")
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.group = group
        self._jsonl = open(self.run_dir / "metrics.jsonl", "w", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_env_steps is None else resume_env_steps + 1
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)

    def write(self, rows: Iterable[Mapping[str, float]], *, tensorboard: bool = True) -> None:
        """Write rows (each with `env_steps`) to JSONL and, per group, to TensorBoard."""
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
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(value) -> float | None:
    """A scalar as a JSON number; NaN / inf (e.g. no episode ended) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
    """All rows of a metrics.jsonl file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


