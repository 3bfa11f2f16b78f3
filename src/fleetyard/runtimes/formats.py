"""Telling artifact formats apart by content (blobs are stored by sha256, without a file name).

- IREE ``.vmfb``: a FlatBuffer with the file identifier ``IREE`` (bytes 4..8, or 8..12 when the
  buffer is size-prefixed). Current compilers wrap it in a ZIP whose first entry, stored
  uncompressed, is ``module.fb``; the identifier is then right after that entry's local header.
- ONNX: a protobuf ``ModelProto``. Protobuf has no magic number, so the first top-level fields
  are walked: each must be a ModelProto field number with its wire type (ir_version, graph,
  opset_import, …). A ``.onnx`` name is trusted when the walk is inconclusive; parsing decides.
- TorchScript (``.pt``, ``torch.jit.save``) and ExportedProgram (``.pt2``, ``torch.export.save``)
  ZIP archives: by their entries (``code/`` and ``data.pkl``; ``models/model.json`` or
  ``serialized_exported_program.json``). They run through torch (:mod:`.torch_runtime`).
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

from fleetyard.runtimes.base import ArtifactFormat
from fleetyard.runtimes.errors import ArtifactError, UnknownFormat

__all__ = ["detect_format", "file_sha256"]

_HEAD_BYTES = 64 * 1024
_ZIP_LOCAL = b"PK\x03\x04"
_IREE_ID = b"IREE"

# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_MODEL_PROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def detect_format(path: Path) -> ArtifactFormat:
    """The format of the artifact at ``path``; :class:`UnknownFormat` or :class:`ArtifactError`
    with what was seen and what is supported."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise ArtifactError(f"artifact {path} not found") from None
    except IsADirectoryError:
        raise ArtifactError(f"artifact {path} is a directory; pass the .onnx or .vmfb file") from None
    suffix = path.suffix.lower()
    if not head:
        raise ArtifactError(f"artifact {path} is empty")
    if _is_vmfb(head):
        return ArtifactFormat.IREE_VMFB
    if head.startswith(_ZIP_LOCAL):
        torch = _torch_archive(path)
        if torch is not None:
            return torch
    if suffix == ".vmfb":
        raise ArtifactError(
            f"{path.name} is named .vmfb but has no IREE module identifier (truncated, or not written by "
            "iree-compile); recompile it with iree-compile",
            detail={"path": str(path)},
        )
    if _walks_like_model_proto(head) or (suffix == ".onnx" and head[:1] != b"\x00"):
        return ArtifactFormat.ONNX
    kind = "a ZIP archive" if head.startswith(_ZIP_LOCAL) else f"bytes {head[:8].hex(' ')}"
    raise UnknownFormat(
        f"unknown artifact format for {path.name}: starts with {kind}. Supported: ONNX models (.onnx), IREE "
        "modules (.vmfb from iree-compile), TorchScript (.pt) and ExportedProgram (.pt2) archives",
        detail={"path": str(path), "head": head[:16].hex()},
    )


def _is_vmfb(head: bytes) -> bool:
    starts = [0]
    if head.startswith(_ZIP_LOCAL) and len(head) >= 30:
        name_len, extra_len = struct.unpack_from("<HH", head, 26)
        name = head[30 : 30 + name_len]
        if name.endswith(b".fb"):
            starts = [30 + name_len + extra_len]
    return any(head[s + off : s + off + 4] == _IREE_ID for s in starts for off in (4, 8))


def _torch_archive(path: Path) -> ArtifactFormat | None:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    if any(n.endswith("serialized_exported_program.json") or n.endswith("/models/model.json") for n in names):
        return ArtifactFormat.TORCH_EXPORT
    if any(n.endswith("/data.pkl") for n in names) and any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return ArtifactFormat.TORCHSCRIPT
    return None


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            return None
    return None


def _walks_like_model_proto(head: bytes) -> bool:
    """Whether the top-level fields in ``head`` are all ModelProto fields (at least one seen)."""
    pos, seen = 0, 0
    while pos < len(head):
        tag = _varint(head, pos)
        if tag is None:
            break  # cut off by the end of head: inconclusive, go by what was seen
        key, pos = tag
        field_no, wire = key >> 3, key & 7
        if _MODEL_PROTO_FIELDS.get(field_no) != wire:
            return False
        value = _varint(head, pos)
        if value is None:
            break
        n, pos = value
        if wire == 2:
            pos += n
        seen += 1
    return seen > 0
