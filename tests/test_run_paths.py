"""Run directories on Cloud Storage, against a fake bucket on local disk (no cloud, no credentials).

What talks to `gs://` in a run, and how each is faked here:
- `etils.epath` (metrics.jsonl, config.json, tables, plots, Orbax's directories and JSON
  items) goes through fsspec's `gs` protocol, normally the `gcsfs` package. Here fsspec's
  `gs` / `gcs` protocols are a local-directory filesystem rooted at the fake bucket's folder.
- TensorStore, which writes and reads Orbax's array data (OCDBT) by itself, speaks the Cloud
  Storage JSON API over HTTP. It honours `TENSORSTORE_GCS_HTTP_URL` (the server to talk to)
  and `GOOGLE_AUTH_TOKEN_FOR_TESTING` (a fixed token instead of the machine's credentials), so
  `_FakeCloudStorage` below serves the few calls it makes (read with ranges and generation
  preconditions, upload, list, delete) from the same folder. Orbax's array write and read
  paths are therefore the real ones.
- Orbax 0.12.8 also asks `google-cloud-storage` whether a `gs://` bucket has a hierarchical
  namespace before it lists steps (`orbax.checkpoint._src.path.gcs_utils.get_bucket`). That
  package is not installed here, so the fixture answers "a flat bucket" for it: the one patched
  function. On a real machine, writing to a bucket needs `gcsfs` and `google-cloud-storage`.
- tensorboardX writes `gs://` event files only with `google-cloud-storage`: without it the run
  goes on with a one-line warning and no TensorBoard events, which is what is checked here
  (the fixture pins tensorboardX's view to "not installed", which it is on this machine).
"""

import http.server
import importlib
import json
import os
import pathlib
import tempfile
import threading
import types
import urllib.parse

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.local import LocalFileSystem

from experiments import cli
from experiments.ppo import RunConfig, main
from jaxrl_si import checkpoint
from jaxrl_si.plots import plot_learning_curves
from jaxrl_si.sinks import MetricWriter, read_jsonl

TINY = [
    "--config.env", "probe:action_reward", "--config.num-envs", "8", "--config.rollout-length", "4", "--config.num-minibatches", "2",
    "--config.hidden-sizes", "16", "--config.total-env-steps", "96", "--iterations", "3", "--seeds", "2",
]  # fmt: skip


class _FakeCloudStorage(http.server.BaseHTTPRequestHandler):
    """The Cloud Storage JSON API calls TensorStore makes, on files `<root>/<bucket>/<object name>`.

    An object's generation is its file's mtime in ns; uploads are atomic (written aside, then renamed).
    """

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        folder, name, query = self._request()
        if name is None:
            return self._list(folder, query.get("prefix", ""))
        path = folder / name
        if not path.is_file():
            return self._reply(404)
        generation = str(path.stat().st_mtime_ns)
        if query.get("ifGenerationNotMatch") == generation:
            return self._reply(304)
        if query.get("ifGenerationMatch", generation) != generation:
            return self._reply(412)
        if query.get("alt") != "media":
            return self._reply(200, json.dumps(_metadata(folder, name)).encode())
        data = path.read_bytes()
        first, last = _byte_range(self.headers.get("Range"), len(data))
        headers = [("x-goog-generation", generation)]
        if (first, last) == (0, len(data) - 1):
            return self._reply(200, data, headers)
        return self._reply(206, data[first : last + 1], [*headers, ("Content-Range", f"bytes {first}-{last}/{len(data)}")])

    def do_POST(self):
        folder, name, query = self._request()
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = folder / name
        if not _generation_matches(path, query):
            return self._reply(412)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder.parent, delete=False) as aside:
            aside.write(data)
        os.replace(aside.name, path)
        self._reply(200, json.dumps(_metadata(folder, name)).encode())

    def do_DELETE(self):
        folder, name, query = self._request()
        path = folder / name
        if not path.is_file():
            return self._reply(404)
        if not _generation_matches(path, query):
            return self._reply(412)
        path.unlink()
        self._reply(204)

    def _request(self) -> tuple[pathlib.Path, str | None, dict]:
        """The bucket's folder, the object name (None for a listing) and the query."""
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parts = url.path.split("/")  # '', ['upload',] 'storage', 'v1', 'b', <bucket>, 'o'[, <object>]
        bucket = parts.index("b") + 1
        name = urllib.parse.unquote(parts[bucket + 2]) if len(parts) > bucket + 2 else query.get("name")
        return self.server.root / parts[bucket], name, query

    def _list(self, folder: pathlib.Path, prefix: str):
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        items = [_metadata(folder, name) for name in names if name.startswith(prefix)]
        self._reply(200, json.dumps({"kind": "storage#objects", "items": items}).encode())

    def _reply(self, status: int, body: bytes = b"{}", headers=()):
        self.send_response(status)
        for header in headers:
            self.send_header(*header)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _metadata(folder: pathlib.Path, name: str) -> dict:
    stat = (folder / name).stat()
    return {"bucket": folder.name, "name": name, "size": str(stat.st_size), "generation": str(stat.st_mtime_ns)}


def _generation_matches(path: pathlib.Path, query: dict) -> bool:
    """`ifGenerationMatch` (0: the object must not exist) holds, or is absent."""
    generation = str(path.stat().st_mtime_ns) if path.is_file() else "0"
    return query.get("ifGenerationMatch", generation) == generation


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """`Range: bytes=a-b`, `bytes=a-` or `bytes=-n` as inclusive (first, last)."""
    if not header:
        return 0, size - 1
    first, last = header.removeprefix("bytes=").split("-")
    if not first:
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last), size - 1) if last else size - 1


class _LocalBucketFileSystem(LocalFileSystem):
    """fsspec's `gs://bucket/key` as the local file `<root>/bucket/key` (what gcsfs would reach)."""

    protocol = ("gs", "gcs")
    root = ""  # set by the fixture

    def __init__(self, **kwargs):
        super().__init__(auto_mkdir=True)  # a bucket has no folders to make first

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for scheme in ("gs://", "gcs://"):
            if path.startswith(scheme):
                return os.path.join(cls.root, path.removeprefix(scheme)).rstrip("/")
        return super()._strip_protocol(path)

    def glob(self, path, **kwargs):  # names as the bucket has them (epath prefixes gs://)
        return [os.path.relpath(p, self.root) for p in super().glob(path, **kwargs)]


@pytest.fixture(scope="module")
def bucket_root(tmp_path_factory):
    """A fake Cloud Storage for this module: the HTTP server, fsspec's `gs` protocol and Orbax's bucket query."""
    from etils.epath import backend
    from orbax.checkpoint._src.path import gcs_utils
    from tensorboardX import record_writer

    root = tmp_path_factory.mktemp("cloud")
    server = http.server.ThreadingHTTPServer(("localhost", 0), _FakeCloudStorage)
    server.root = root
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORSTORE_GCS_HTTP_URL", f"http://localhost:{server.server_address[1]}")
        patch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake-token")
        patch.setattr(_LocalBucketFileSystem, "root", str(root))
        for protocol in _LocalBucketFileSystem.protocol:
            patch.setitem(importlib.import_module("fsspec.registry")._registry, protocol, _LocalBucketFileSystem)
        patch.setattr(gcs_utils, "get_bucket", lambda name: types.SimpleNamespace(hierarchical_namespace_enabled=False))
        patch.setattr(record_writer, "GCS_ENABLED", False)  # as without google-cloud-storage, even where it is installed
        backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem of a protocol
        yield root
        backend.fsspec_backend._get_filesystem.cache_clear()
    server.shutdown()


@pytest.fixture
def bucket(bucket_root, request) -> tuple[str, pathlib.Path]:
    """A new bucket: its `gs://` URL and the local folder that holds its objects."""
    name = f"bucket-{request.node.name.lower().replace('_', '-')[:40]}"
    (bucket_root / name).mkdir()
    return f"gs://{name}", bucket_root / name


def test_run_dir_flags_keep_gs_urls(tmp_path):
    parsed = cli.main(RunConfig, lambda run: run, args=["--run-dir", "gs://bucket/runs/x"])
    assert isinstance(parsed.run_dir, epath.Path) and os.fspath(parsed.run_dir / "metrics.jsonl") == "gs://bucket/runs/x/metrics.jsonl"
    assert str(pathlib.Path("gs://bucket/runs/x")) == "gs:/bucket/runs/x"  # why run_dir is not a pathlib.Path
    assert cli.main(RunConfig, lambda run: run, args=["--run-dir", str(tmp_path)]).run_dir == epath.Path(tmp_path)


def test_ppo_on_a_bucket_writes_every_artifact_and_resumes_exactly(bucket, monkeypatch, tmp_path):
    url, folder = bucket
    monkeypatch.chdir(tmp_path)  # a gs:// URL mistaken for a local path would appear here as gs:/...
    args = [*TINY, "--run-dir", f"{url}/run"]
    with pytest.warns(UserWarning, match=f"^no TensorBoard events in {url}/run/tb: tensorboardX writes to gs:// only with google-cloud-storage installed$"):
        cli.main(RunConfig, main, args=args)
    assert {"config.json", "metrics.jsonl", "summary.json", "table.csv", "table.json", "curves.png", "checkpoints"} <= {p.name for p in (folder / "run").iterdir()}
    assert sorted(p.name for p in (folder / "run" / "checkpoints").iterdir()) == ["1", "2", "3"]
    assert all((folder / "run" / "checkpoints" / step / "commit_success.txt").is_file() for step in "123")  # Orbax's GCS commit marker
    assert list(tmp_path.iterdir()) == []
    assert json.loads((folder / "run" / "config.json").read_text())["run_dir"] == f"{url}/run"
    assert (folder / "run" / "curves.png").read_bytes().startswith(b"\x89PNG")

    rows = read_jsonl(f"{url}/run/metrics.jsonl")
    assert len(rows) == 2 * 3
    digest = json.loads((folder / "run" / "checkpoints" / "3" / "meta" / "metadata").read_text())["state_digest"]
    epath.Path(f"{url}/run/checkpoints/3").rmtree()  # as if preempted after iteration 2
    with pytest.warns(UserWarning, match="no TensorBoard events"):
        cli.main(RunConfig, main, args=[*args, "--resume"])
    assert read_jsonl(f"{url}/run/metrics.jsonl") == rows
    assert json.loads((folder / "run" / "checkpoints" / "3" / "meta" / "metadata").read_text())["state_digest"] == digest


def test_a_step_without_its_commit_marker_is_not_restored(bucket):
    """On Cloud Storage nothing is renamed: Orbax writes a step in place and marks it complete
    last (`commit_success.txt`). A step whose marker is missing (a save cut short) is skipped."""
    url, folder = bucket
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": 1}
    with checkpoint.Checkpointer(f"{url}/checkpoints") as saver:
        saver.save(1, state, config={"run": 1}, history={"episode/return": np.ones((2, 1))})
        saver.save(2, {**state, "step": 2}, config={"run": 1})
    (folder / "checkpoints" / "2" / "commit_success.txt").unlink()
    with checkpoint.Checkpointer(f"{url}/checkpoints") as saver:
        restored = saver.restore_latest(checkpoint.abstract_target(state), config={"run": 1})
    assert restored.step == 1 and restored.state["step"] == 1
    np.testing.assert_array_equal(restored.state["w"], state["w"])
    np.testing.assert_array_equal(restored.history["episode/return"], np.ones((2, 1)))


def test_metric_rows_and_plots_go_to_the_bucket_and_only_from_an_active_writer(bucket):
    url, folder = bucket
    rows = [{"member": 0, "env_steps": 8, "episode/return": 1.5}, {"member": 0, "env_steps": 16, "episode/return": float("nan")}]
    for active in (False, True):
        writer = MetricWriter(f"{url}/{active}", group="member", tensorboard=False, active=active)
        writer.write(rows)
        writer.close()
    assert not (folder / "False").exists()
    assert read_jsonl(f"{url}/True/metrics.jsonl") == [rows[0], {**rows[1], "episode/return": None}]
    path = plot_learning_curves({"a": (np.arange(3), np.ones((2, 3)))}, f"{url}/plots/curves.png")
    assert os.fspath(path) == f"{url}/plots/curves.png" and (folder / "plots" / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_url_without_a_filesystem_for_its_scheme_is_a_config_error():
    from jaxrl_si.errors import ConfigError
    from jaxrl_si.paths import run_path

    with pytest.raises(ConfigError, match=r"nosuchfs://bucket/run needs a filesystem for nosuchfs://"):
        run_path("nosuchfs://bucket/run")
    assert run_path("runs/x").is_absolute()
