"""A warm cache of loaded models, so that a board's worker reuses a loaded model across jobs.

Keyed by (artifact sha256, device settings, IREE function): the same bytes on the same device
with the same threads are one loaded model, wherever the file lies. Bounded by a count, least
recently used out first; an evicted model is released (its device memory freed).

A worker runs one job at a time, so a model handed out is not evicted while in use unless the
same job loads more than ``capacity`` others; do not keep a model across jobs: ask the cache.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetyard.runtimes.artifacts import load as load_artifact
from fleetyard.runtimes.base import DeviceSettings, LoadedModel
from fleetyard.runtimes.formats import file_sha256

__all__ = ["CacheKey", "SessionCache", "default_cache"]

DEFAULT_CAPACITY = 4
ENV_CAPACITY = "FLEETYARD_SESSION_CACHE_SIZE"

Loader = Callable[..., LoadedModel]


@dataclass(frozen=True)
class CacheKey:
    sha256: str
    settings: DeviceSettings
    function: str | None = None


class SessionCache:
    """Loaded models by :class:`CacheKey`, at most ``capacity`` of them (LRU)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, loader: Loader = load_artifact) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._loader = loader
        self._models: OrderedDict[CacheKey, LoadedModel] = OrderedDict()
        # (path, device, inode, size, mtime_ns) -> sha256: a stat instead of hashing the file again.
        self._digests: dict[tuple[str, int, int, int, int], str] = {}
        self._lock = threading.RLock()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def keys(self) -> list[CacheKey]:
        """Least recently used first."""
        with self._lock:
            return list(self._models)

    def key(
        self,
        path: Path | str,
        settings: DeviceSettings | None = None,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> CacheKey:
        return CacheKey(sha256 or self._digest(Path(path)), settings or DeviceSettings(), function)

    def get(
        self,
        path: Path | str,
        settings: DeviceSettings | None = None,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> LoadedModel:
        """The loaded model for this artifact and device, loading it on a miss.

        ``sha256`` is the artifact's digest when the caller knows it (a blob is named by it);
        otherwise the file is hashed once and remembered by its stat.
        """
        return self.lookup(path, settings, sha256=sha256, function=function)[0]

    def lookup(
        self,
        path: Path | str,
        settings: DeviceSettings | None = None,
        *,
        sha256: str | None = None,
        function: str | None = None,
    ) -> tuple[LoadedModel, bool]:
        """:meth:`get`, and whether this call was a hit (the model was already loaded)."""
        key = self.key(path, settings, sha256=sha256, function=function)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return model, True
            self.misses += 1
            # Loading under the lock: a second caller of the same key waits and then hits.
            model = self._loader(Path(path), key.settings, sha256=key.sha256, function=function)
            self._models[key] = model
            while len(self._models) > self.capacity:
                _, old = self._models.popitem(last=False)
                self.evictions += 1
                old.release()
            return model, False

    def evict(self, key: CacheKey) -> bool:
        """Release one model; whether it was there."""
        with self._lock:
            model = self._models.pop(key, None)
        if model is None:
            return False
        model.release()
        return True

    def clear(self) -> None:
        """Release every model (a worker does this when its board session closes)."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.release()

    def _digest(self, path: Path) -> str:
        st = os.stat(path)
        memo = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(memo)
        if digest is None:
            digest = file_sha256(path)
            if len(self._digests) > 1024:
                self._digests.clear()
            self._digests[memo] = digest
        return digest


_default: SessionCache | None = None
_default_lock = threading.Lock()


def default_cache() -> SessionCache:
    """This process's cache (a board's worker keeps it across jobs); capacity from
    ``FLEETYARD_SESSION_CACHE_SIZE`` (default 4)."""
    global _default
    with _default_lock:
        if _default is None:
            text = os.environ.get(ENV_CAPACITY, "")
            _default = SessionCache(int(text) if text.isdigit() and int(text) > 0 else DEFAULT_CAPACITY)
        return _default
