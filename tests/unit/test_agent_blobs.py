"""The agent's blob cache against a real HTTP server; and a runner fetching a `run` job's blobs."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_worker import HOST, SPEC, Events, assignment
from tests.unit import models

from fleetyard.agent.blobs import BlobCache, BlobNotFound, BlobUnavailable
from fleetyard.agent.link import ServerLink
from fleetyard.agent.runner import BoardRunner, RunnerConfig
from fleetyard.domain.job import Outcome
from fleetyard.drivers.sim import SimDriver


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class BlobServer:
    """A folder served over HTTP as ``/v1/blobs/<sha>``, counting GETs."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "v1" / "blobs"
        self.dir.mkdir(parents=True)
        self.gets = 0
        server = self

        class Handler(_Handler):
            def do_GET(self) -> None:
                server.gets += 1
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def put(self, data: bytes, *, as_sha: str | None = None) -> str:
        sha = as_sha or hashlib.sha256(data).hexdigest()
        (self.dir / sha).write_bytes(data)
        return sha

    def link(self) -> ServerLink:
        return ServerLink(self.url, "token")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BlobServer]:
    s = BlobServer(tmp_path / "srv")
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_download_verify_hit_and_survive_a_restart(server: BlobServer, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)  # several chunks
    sha = server.put(data)
    cache = BlobCache(tmp_path / "blobs", server.link)
    path = cache.get(sha)
    assert path == tmp_path / "blobs" / sha[:2] / sha and path.read_bytes() == data
    assert cache.get(sha) == path and server.gets == 1 and cache.hits == 1
    # Another process of the agent finds it on disk; a stray partial download is swept.
    (path.parent / f"{sha}.123.part").write_bytes(b"half")
    again = BlobCache(tmp_path / "blobs", server.link)
    assert sha in again and again.get(sha) == path and server.gets == 1
    assert not (path.parent / f"{sha}.123.part").exists()


def test_concurrent_gets_download_once(server: BlobServer, tmp_path: Path) -> None:
    sha = server.put(os.urandom(2 * 1024 * 1024))
    cache = BlobCache(tmp_path / "blobs", server.link)
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda: paths.append(cache.get(sha))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(paths) == 4 and len(set(paths)) == 1 and server.gets == 1


def test_corrupt_download_is_refused_and_404_is_not_found(server: BlobServer, tmp_path: Path) -> None:
    claimed = hashlib.sha256(b"the real bytes").hexdigest()
    server.put(b"other bytes", as_sha=claimed)
    cache = BlobCache(tmp_path / "blobs", server.link, retry_for_s=0.3)
    with pytest.raises(BlobUnavailable, match="sha256 is") as info:
        cache.get(claimed)
    assert info.value.sha256 == claimed and server.gets >= 2  # retried, then gave up
    assert claimed not in cache and not list((tmp_path / "blobs").rglob(f"{claimed}*"))
    missing = "0" * 64
    with pytest.raises(BlobNotFound, match=f"blob {missing} does not exist"):
        cache.get(missing)
    with pytest.raises(BlobNotFound, match="not a sha256"):
        cache.get("../../etc/passwd")


def test_unreachable_server_gives_up_after_the_retry_time(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs", lambda: ServerLink("http://127.0.0.1:9", "t"), retry_for_s=0.3)
    with pytest.raises(BlobUnavailable, match="cannot fetch blob"):
        cache.get("1" * 64)


def test_least_recently_used_blobs_are_evicted_but_not_held_ones(server: BlobServer, tmp_path: Path) -> None:
    shas = [server.put(bytes([i]) * 1000) for i in range(4)]
    cache = BlobCache(tmp_path / "blobs", server.link, max_bytes=2500)
    with cache.held([shas[0]]):
        for sha in shas[1:]:
            cache.get(sha)
        assert shas[0] in cache  # held by a running rank
    assert cache.total_bytes <= 2500
    assert shas[3] in cache and shas[1] not in cache
    assert cache.get(shas[1]).read_bytes() == bytes([1]) * 1000  # fetched again after eviction


@pytest.fixture
def blob_runner(
    tmp_path: Path, server: BlobServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BoardRunner, Events, SimDriver]]:
    monkeypatch.setenv("FLEETYARD_SIM_TIME_SCALE", "0")
    driver = SimDriver(SPEC, host=HOST, state_dir=tmp_path)
    events = Events()
    cache = BlobCache(tmp_path / "blobs", server.link, retry_for_s=0.3)
    config = RunnerConfig(driver_spec=SPEC, host=HOST, state_dir=tmp_path, stop_grace_s=0.3, blobs=cache)
    r = BoardRunner(driver.discover()[0].serial, driver, config, events)
    r.start()
    yield r, events, driver
    r.close()
    r.join(5)


def test_runner_fetches_blobs_then_runs_the_model(
    blob_runner: tuple[BoardRunner, Events, SimDriver], server: BlobServer, tmp_path: Path
) -> None:
    r, events, _ = blob_runner
    onnx_bytes = models.mlp(batch="batch").SerializeToString()
    model_sha = server.put(onnx_bytes)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "x.npy", x)
    inputs_sha = server.put((tmp_path / "x.npy").read_bytes())
    a = assignment(r.serial, {"artifact": model_sha, "inputs": inputs_sha}, kind="run")
    r.submit(a)
    done = events.finished(a.id, timeout=30)
    assert done.outcome is Outcome.SUCCESS, done.message
    uploads = next(u for e, u in events.items if e is done)
    assert uploads is not None and list(done.outputs) == ["outputs.npz"]
    with np.load(uploads[done.outputs["outputs.npz"]]) as npz:
        np.testing.assert_allclose(npz["y"], models.mlp_reference(x), rtol=1e-5, atol=1e-6)
    # A blob nobody uploaded: the job's fault, named.
    missing = "f" * 64
    b = assignment(r.serial, {"artifact": missing}, kind="run")
    r.submit(b)
    bad = events.finished(b.id, timeout=30)
    assert bad.outcome is Outcome.CONFIG_ERROR and missing in (bad.message or "")
