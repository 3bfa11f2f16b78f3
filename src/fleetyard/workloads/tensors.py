"""A workload's input tensors: loaded from a file, or generated from a seed; and saving outputs.

Files are ``.npz`` (keys are input names; one array in a file for a one-input model needs no
name), ``.npy`` (one-input models) or JSON (``{name: nested lists}``). The format is read from
the content, not the name, because a blob in the agent's cache has no suffix.

Generated inputs are deterministic for a seed: input *i* (in signature order) draws from its own
stream ``default_rng([seed, i])``, so changing one input's range leaves the others' values alone.
Defaults: floats uniform in [-1, 1), integers in [0, 10), booleans fair coins. A symbolic
dimension takes its value from ``dims`` (default 1), as does an unknown one.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fleetyard.runtimes import InputMismatch, Signature, TensorSpec, check_inputs

__all__ = [
    "DEFAULT_FLOAT_RANGE",
    "DEFAULT_INT_RANGE",
    "array_sha256",
    "describe_arrays",
    "generate_inputs",
    "load_arrays",
    "load_inputs",
    "resolve_shape",
    "save_arrays",
]

DEFAULT_FLOAT_RANGE = (-1.0, 1.0)
DEFAULT_INT_RANGE = (0, 10)

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def resolve_shape(spec: TensorSpec, dims: Mapping[str, int]) -> tuple[int, ...]:
    """The concrete shape to generate for ``spec``: symbols from ``dims`` (default 1), unknown → 1."""
    if spec.shape is None:
        raise InputMismatch(
            f"input {spec.name!r}: the model does not say its rank, so it cannot be generated; pass an inputs file",
            detail={"input": spec.name},
        )
    shape: list[int] = []
    for d in spec.shape:
        if isinstance(d, str):
            shape.append(int(dims.get(d, 1)))
        elif d is None or d < 0:
            shape.append(1)
        else:
            shape.append(d)
    return tuple(shape)


def generate_inputs(
    signature: Signature,
    *,
    seed: int = 0,
    ranges: Mapping[str, Sequence[float]] | None = None,
    dims: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Random inputs for ``signature``, the same for the same seed, ranges and dims."""
    ranges = dict(ranges or {})
    dims = dict(dims or {})
    names = [t.name for t in signature.inputs]
    unknown = sorted(set(ranges) - set(names))
    if unknown:
        raise InputMismatch(
            f"ranges name unknown input(s) {', '.join(map(repr, unknown))}; "
            f"the model takes {', '.join(names) or 'none'}",
            detail={"unknown": unknown, "expected": names},
        )
    symbols = {d for t in signature.inputs for d in (t.shape or ()) if isinstance(d, str)}
    unbound = sorted(set(dims) - symbols)
    if unbound:
        raise InputMismatch(
            f"dims name unknown symbol(s) {', '.join(map(repr, unbound))}; "
            f"the model's symbols are {', '.join(sorted(symbols)) or 'none'}",
            detail={"unknown": unbound, "expected": sorted(symbols)},
        )
    bad = {s: v for s, v in dims.items() if int(v) < 1}
    if bad:
        raise InputMismatch(f"dims must be positive, got {bad}", detail={"dims": bad})
    out: dict[str, np.ndarray] = {}
    for i, spec in enumerate(signature.inputs):
        rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, i])
        shape = resolve_shape(spec, dims)
        out[spec.name] = _generate(spec, shape, rng, ranges.get(spec.name))
    return out


def _generate(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator, rng_range: Any) -> np.ndarray:
    dtype_name = spec.dtype or "float32"
    if dtype_name == "bool":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    try:
        dtype = np.dtype(dtype_name)
    except TypeError:
        raise InputMismatch(
            f"input {spec.name!r}: cannot generate values of dtype {dtype_name}; pass an inputs file",
            detail={"input": spec.name, "dtype": dtype_name},
        ) from None
    if rng_range is not None and (len(rng_range) != 2 or not rng_range[0] < rng_range[1]):
        raise InputMismatch(
            f"input {spec.name!r}: a range is [lo, hi] with lo < hi, got {list(rng_range)}",
            detail={"input": spec.name, "range": list(rng_range)},
        )
    if dtype.kind == "f":
        lo, hi = rng_range if rng_range is not None else DEFAULT_FLOAT_RANGE
        return rng.uniform(float(lo), float(hi), size=shape).astype(dtype)
    if dtype.kind in "iu":
        lo, hi = rng_range if rng_range is not None else DEFAULT_INT_RANGE
        info = np.iinfo(dtype)
        if int(lo) < info.min or int(hi) - 1 > info.max:
            raise InputMismatch(
                f"input {spec.name!r}: range [{lo}, {hi}) does not fit {dtype.name}",
                detail={"input": spec.name, "range": [lo, hi], "dtype": dtype.name},
            )
        return rng.integers(int(lo), int(hi), size=shape, dtype=dtype, endpoint=False)
    raise InputMismatch(
        f"input {spec.name!r}: cannot generate values of dtype {dtype.name}; pass an inputs file",
        detail={"input": spec.name, "dtype": dtype.name},
    )


def load_arrays(path: Path | str) -> dict[str, np.ndarray]:
    """The arrays in an ``.npz``, ``.npy`` (keyed ``""``) or JSON file, whichever it is."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        if head.startswith(_ZIP_MAGIC):
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if head.startswith(_NPY_MAGIC):
            return {"": np.load(path, allow_pickle=False)}
        data = json.loads(path.read_text())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputMismatch(f"cannot read inputs file {path.name}: {exc}", detail={"file": str(path)}) from None
    if not isinstance(data, dict):
        raise InputMismatch(
            "a JSON inputs file is an object {input name: nested lists}", detail={"given": type(data).__name__}
        )
    return {str(k): np.asarray(v) for k, v in data.items()}


def load_inputs(path: Path | str, signature: Signature) -> dict[str, np.ndarray]:
    """Inputs for ``signature`` from a file, checked against it (names, dtypes, shapes).

    A file holding one array for a one-input model is that input, whatever its key. JSON has no
    dtypes, so its lists are cast to each input's dtype; arrays from ``.npz``/``.npy`` are not
    cast, as a silent cast would hide a wrong file.
    """
    arrays = load_arrays(path)
    specs = {t.name: t for t in signature.inputs}
    if len(arrays) == 1 and len(specs) == 1:
        (value,) = arrays.values()
        arrays = {next(iter(specs)): value}
    elif "" in arrays:
        raise InputMismatch(
            f"a .npy file holds one unnamed array, but the model takes {len(specs)} inputs "
            f"({', '.join(specs)}); use an .npz keyed by input name",
            detail={"expected": list(specs)},
        )
    if _is_json(path):
        arrays = {n: _cast_json(specs[n], a) if n in specs else a for n, a in arrays.items()}
    return check_inputs(signature, arrays)


def _is_json(path: Path | str) -> bool:
    with open(path, "rb") as f:
        head = f.read(8)
    return not (head.startswith(_ZIP_MAGIC) or head.startswith(_NPY_MAGIC))


def _cast_json(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    if spec.dtype is None or spec.dtype == "str":
        return arr
    try:
        return arr.astype(np.dtype(spec.dtype))
    except (TypeError, ValueError):
        return arr  # check_inputs names the mismatch


def save_arrays(path: Path | str, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` keyed by name (what ``np.load`` reads).

    Written entry by entry rather than through ``np.savez``, whose keyword arguments would
    clash with an output named ``file`` or ``allow_pickle``.
    """
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    return path


def array_sha256(arr: np.ndarray) -> str:
    """The sha256 of an array's bytes in C order: equal digests, equal numbers."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def describe_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{name: {shape, dtype, sha256}}`` for a result."""
    return {n: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": array_sha256(a)} for n, a in arrays.items()}
