"""Content-addressed files: a blob's name is the sha256 of its bytes."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fleetyard.errors import BadRequest, DigestMismatch, PayloadTooLarge

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_digest(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise BadRequest(f"{sha256!r} is not a sha256 digest (64 lowercase hex characters)")
    return sha256


class BlobStore:
    """Files under ``root/ab/abcdef…``; writes land in a temp file and are renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def upload(self, expected: str, *, max_bytes: int) -> Upload:
        """Start writing a blob that must hash to ``expected``."""
        return Upload(self, expected, max_bytes)

    def put(self, expected: str, chunks: Iterable[bytes], *, max_bytes: int) -> int:
        """Store the bytes if they hash to ``expected``; return their size."""
        up = self.upload(expected, max_bytes=max_bytes)
        try:
            for chunk in chunks:
                up.write(chunk)
            return up.commit()
        finally:
            up.abort()


class Upload:
    """One blob being written: hashed as it arrives, renamed into place only if the digest matches."""

    def __init__(self, store: BlobStore, expected: str, max_bytes: int) -> None:
        self.target = store.path(expected)
        self.expected = expected
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        fd, self._tmp = tempfile.mkstemp(dir=store.root, prefix=".upload-")
        self._out = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(
                f"blob is larger than the server's limit of {self.max_bytes} bytes",
                detail={"limit_bytes": self.max_bytes},
            )
        self._digest.update(chunk)
        self._out.write(chunk)

    def commit(self) -> int:
        self._out.close()
        actual = self._digest.hexdigest()
        if actual != self.expected:
            raise DigestMismatch(
                f"uploaded bytes hash to {actual}, not {self.expected}: the upload was corrupted "
                "or named by the wrong digest",
                detail={"expected": self.expected, "actual": actual},
            )
        self.target.parent.mkdir(exist_ok=True)
        os.replace(self._tmp, self.target)
        return self.size

    def abort(self) -> None:
        """Drop the temporary file (a no-op after a successful commit)."""
        self._out.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)
