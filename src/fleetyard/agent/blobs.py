"""The agent's content-addressed blob cache: ``<root>/<ab>/<sha256>``.

A job's artifact and inputs are fetched once per host, however many ranks and jobs use them:

    cache = BlobCache(state_dir / "blobs", lambda: ServerLink(server, token))
    with cache.held([sha]) as paths:         # fetched (or hit), and safe from eviction meanwhile
        run_with(paths[sha])

A download streams ``GET /v1/blobs/{sha}`` to a temporary file in the cache, checks its sha256
and renames it into place, so a file under its name is always complete and correct. One download
per sha at a time: a second caller waits for the first and then hits. When the cache is over
``max_bytes`` the least recently used blobs not held by a running rank are removed.

The cache outlives the agent process (a restarted agent finds its blobs again); stray temporary
files of a killed download are removed at start.

Errors: :class:`BlobNotFound` (the server has no such blob: the job names something that does
not exist) and :class:`BlobUnavailable` (the server could not be reached, or sent wrong bytes,
at least twice, and for longer than ``retry_for_s``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

from fleetyard.agent.link import Backoff, ServerLink

__all__ = ["DEFAULT_MAX_BYTES", "BlobCache", "BlobError", "BlobNotFound", "BlobUnavailable"]

log = logging.getLogger("fleetyard.agent.blobs")

DEFAULT_MAX_BYTES = 20 * 1024**3
DEFAULT_RETRY_FOR_S = 60.0
_CHUNK = 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{64}$")
_TMP_SUFFIX = ".part"


class BlobError(Exception):
    def __init__(self, sha256: str, message: str) -> None:
        super().__init__(message)
        self.sha256 = sha256
        self.message = message


class BlobNotFound(BlobError):
    """The server has no blob with this sha256."""


class BlobUnavailable(BlobError):
    """The blob could not be fetched in time (server unreachable, or the bytes did not match)."""


class _Retry(Exception):
    pass


class BlobCache:
    """Blobs on this host's disk, named by sha256, fetched from the server on a miss."""

    def __init__(
        self,
        root: Path,
        link_factory: Callable[[], ServerLink],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retry_for_s: float = DEFAULT_RETRY_FOR_S,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.retry_for_s = retry_for_s
        self._link_factory = link_factory
        self._local = threading.local()  # one ServerLink per thread, as links are not shared
        self._lock = threading.Lock()  # guards the fields below
        self._sha_locks: dict[str, threading.Lock] = {}
        self._holds: dict[str, int] = {}
        # Invariant: _sizes has exactly the complete blobs on disk, _total is their sum.
        self._sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._total = 0
        self.hits = 0
        self.downloads = 0
        self._scan()

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._sizes

    @property
    def total_bytes(self) -> int:
        return self._total

    def recent(self, n: int) -> list[str]:
        """The ``n`` blobs used last, the most recent last (what the heartbeat reports)."""
        with self._lock:
            return sorted(self._sizes, key=lambda s: (self._used.get(s, 0.0), s))[-n:] if n > 0 else []

    def _scan(self) -> None:
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                if f.name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()  # a download killed midway
                elif _SHA.match(f.name):
                    st = f.stat()
                    self._sizes[f.name] = st.st_size
                    self._used[f.name] = st.st_atime
                    self._total += st.st_size

    # ---- public

    def get(self, sha256: str, *, should_stop: Callable[[], bool] | None = None) -> Path:
        """The blob's file, downloading it on a miss; raises :class:`BlobError`."""
        with self.held([sha256], should_stop=should_stop) as paths:
            return paths[sha256]

    @contextlib.contextmanager
    def held(self, shas: Iterable[str], *, should_stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Path]]:
        """Fetch ``shas`` and keep them from eviction until the block ends."""
        shas = list(dict.fromkeys(shas))
        with self._lock:
            for s in shas:
                self._holds[s] = self._holds.get(s, 0) + 1
        try:
            yield {s: self._fetch(s, should_stop) for s in shas}
        finally:
            with self._lock:
                for s in shas:
                    self._holds[s] -= 1
                    if not self._holds[s]:
                        del self._holds[s]
            self._evict()

    def close(self) -> None:
        link = getattr(self._local, "link", None)
        if link is not None:
            link.close()
            self._local.link = None

    # ---- internals

    def _fetch(self, sha: str, should_stop: Callable[[], bool] | None) -> Path:
        if not _SHA.match(sha):
            raise BlobNotFound(sha, f"{sha!r} is not a sha256 (64 lowercase hex digits)")
        with self._lock:
            lock = self._sha_locks.setdefault(sha, threading.Lock())
        with lock:  # one download per sha; a second caller waits and then hits
            dest = self.path(sha)
            with self._lock:
                present = sha in self._sizes
                if present:
                    self.hits += 1
                    self._used[sha] = time.time()
            if present and dest.exists():
                with contextlib.suppress(OSError):
                    os.utime(dest)
                return dest
            if present:  # removed behind our back
                with self._lock:
                    self._forget(sha)
            size = self._download(sha, dest, should_stop)
            with self._lock:
                self.downloads += 1
                self._sizes[sha] = size
                self._used[sha] = time.time()
                self._total += size
            return dest

    def _forget(self, sha: str) -> None:
        self._total -= self._sizes.pop(sha, 0)
        self._used.pop(sha, None)

    def _link(self) -> ServerLink:
        link: ServerLink | None = getattr(self._local, "link", None)
        if link is None:
            link = self._local.link = self._link_factory()
        return link

    def _download(self, sha: str, dest: Path, should_stop: Callable[[], bool] | None) -> int:
        deadline = time.monotonic() + self.retry_for_s
        backoff = Backoff()
        tries = 0
        while True:
            try:
                return self._download_once(sha, dest)
            except _Retry as exc:
                why = str(exc)
                self._link().fail_over()  # another replica, if the agent knows several
            tries += 1
            # A second try always (another replica; a transfer slower than the window on a busy
            # host), then more while the window lasts.
            gave_up = tries >= 2 and time.monotonic() >= deadline
            if gave_up or (should_stop is not None and should_stop()):
                raise BlobUnavailable(sha, f"cannot fetch blob {sha}: {why}")
            log.warning("blob %s: %s; retrying", sha, why)
            backoff.wait()

    def _download_once(self, sha: str, dest: Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{sha}.{threading.get_ident()}{_TMP_SUFFIX}")
        digest = hashlib.sha256()
        size = 0
        try:
            link = self._link()
            with link.client.stream("GET", link.url(f"/v1/blobs/{sha}")) as r:
                if r.status_code == 404:
                    raise BlobNotFound(sha, f"blob {sha} does not exist on the server")
                if r.status_code >= 500 or r.status_code == 429:
                    raise _Retry(f"HTTP {r.status_code}")
                if r.status_code >= 400:
                    r.read()
                    raise BlobUnavailable(sha, f"cannot fetch blob {sha}: HTTP {r.status_code}: {r.text[:200]}")
                with open(tmp, "wb") as f:
                    for chunk in r.iter_bytes(_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
            got = digest.hexdigest()
            if got != sha:
                raise _Retry(f"downloaded {size} bytes whose sha256 is {got}")
            os.replace(tmp, dest)
            return size
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _evict(self) -> None:
        with self._lock:
            if self._total <= self.max_bytes:
                return
            victims: list[tuple[str, int]] = []
            total = self._total
            for sha in sorted(self._sizes, key=lambda s: self._used.get(s, 0.0)):
                if total <= self.max_bytes:
                    break
                if sha in self._holds:
                    continue
                lock = self._sha_locks.get(sha)
                if lock is not None and lock.locked():
                    continue
                victims.append((sha, self._sizes[sha]))
                total -= self._sizes[sha]
                self._forget(sha)
                # Under the lock: a fetch of the same sha re-downloads only after this.
                with contextlib.suppress(FileNotFoundError):
                    self.path(sha).unlink()
        for sha, size in victims:
            log.info("blob cache: evicted %s (%d bytes)", sha, size)
