"""Run directories on a local disk or on Cloud Storage (`gs://bucket/...`), behind one path type.

Everything a run writes (metrics, TensorBoard, checkpoints, configs, tables, plots) goes through
`etils.epath.Path`, the path type Orbax itself uses: `pathlib`-like (`/`, `open`, `read_text`,
`mkdir`, `exists`), with `gs://` (and `s3://`) handled by a filesystem backend. `pathlib.Path`
cannot stand in: it reads `gs://bucket/x` as a local path and collapses it to `gs:/bucket/x`.

Which backend serves `gs://`: TensorFlow's `tf.io.gfile` when TensorFlow is installed, else
fsspec, whose `gs` protocol is the `gcsfs` package. Orbax writes the arrays of a checkpoint with
TensorStore, which talks to Cloud Storage by itself (its `gcs` driver, credentials from the
machine's service account), and asks `google-cloud-storage` about the bucket. The `gcs` extra
installs both packages; without a backend for the URL's scheme `run_path` is a `ConfigError`
naming it, before anything runs.
"""

from __future__ import annotations

import os

import fsspec
from etils import epath

from jaxrl_si.errors import ConfigError


def run_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an `epath.Path`; a local path made absolute (Orbax requires absolute paths), a URL kept as is."""
    if is_url(path):
        check_backend(os.fspath(path))
        return epath.Path(path)
    return epath.Path(path).absolute()


def check_backend(url: str) -> None:
    """`ConfigError` unless fsspec can open `url`'s scheme (`gs://` needs `gcsfs`: the `gcs` extra)."""
    scheme = url.partition("://")[0]
    try:
        fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as error:
        raise ConfigError(f"{url} needs a filesystem for {scheme}:// ({' '.join(str(error).split())[:200]}); for gs:// run pip install 'jaxrl_si[gcs]'") from None


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names a remote object store (`gs://...`, `s3://...`) rather than a local path."""
    return "://" in os.fspath(path)
