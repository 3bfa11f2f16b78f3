"""A workload's input tensors: loaded from a file, or generated from a seed; and saving outputs.

Files are ``.npz`` (keys are input names; one array in a file for a one-input model needs no
name), ``.npy`` (one-input models) or JSON (``{name: nested lists}``). The format is read from
the content, not the name, because a blob in the agent's cache has no suffix.

A file may hold several input sets (``validate`` streams them): an ``.npz`` keyed
``"SET/name"`` (``"0/x"``, ``"1/x"``, …; sets numbered from 0 with no gaps) or a JSON list of
``{name: nested lists}`` objects (Polygraphy's ``--load-inputs`` layout). An ``.npz`` is read one
set at a time, so memory is that of one set; a JSON file is parsed whole.

Generated inputs are deterministic for a seed: input *i* (in signature order) draws from its own
stream ``default_rng([seed, i])``, so changing one input's range leaves the others' values alone.
Defaults: floats uniform in [-1, 1), integers in [0, 10), booleans fair coins. A symbolic
dimension takes its value from ``dims`` (default 1), as does an unknown one.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from fleetyard.runtimes import InputMismatch, Signature, TensorSpec, check_inputs

__all__ = [
    "DEFAULT_FLOAT_RANGE",
    "DEFAULT_INT_RANGE",
    "array_sha256",
    "check_input_file",
    "describe_arrays",
    "generate_inputs",
    "input_set_count",
    "iter_array_sets",
    "iter_input_sets",
    "load_arrays",
    "load_inputs",
    "peek_input_sets",
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
    """The arrays of a one-set ``.npz``, ``.npy`` (keyed ``""``) or JSON file, whichever it is."""
    path = Path(path)
    count = _count_sets(path)
    if count != 1:
        raise InputMismatch(
            f"{path.name} holds {count} sets of arrays; this takes one (validate streams several)",
            detail={"file": str(path), "sets": count},
        )
    return next(iter_array_sets(path))


def input_set_count(path: Path | str) -> int:
    """How many input sets the file holds (1 for a plain one-set file)."""
    return _count_sets(Path(path))


def load_inputs(path: Path | str, signature: Signature) -> dict[str, np.ndarray]:
    """Inputs for ``signature`` from a one-set file, checked against it (names, dtypes, shapes).

    A file holding one array for a one-input model is that input, whatever its key. JSON has no
    dtypes, so its lists are cast to each input's dtype; arrays from ``.npz``/``.npy`` are not
    cast, as a silent cast would hide a wrong file.
    """
    return _as_inputs(load_arrays(path), signature, json_file=_is_json(path))


def iter_input_sets(path: Path | str, signature: Signature) -> Iterator[dict[str, np.ndarray]]:
    """Each input set of the file in order, checked against ``signature``, read one at a time.

    A bad set raises :class:`InputMismatch` naming its number.
    """
    path = Path(path)
    many = _count_sets(path) > 1
    is_json = _is_json(path)
    for i, arrays in enumerate(iter_array_sets(path)):
        try:
            yield _as_inputs(arrays, signature, json_file=is_json)
        except InputMismatch as exc:
            if not many:
                raise
            raise InputMismatch(f"input set {i}: {exc.message}", detail={"set": i, **(exc.detail or {})}) from None


def peek_input_sets(path: Path | str) -> list[dict[str, np.ndarray]]:
    """Every set of an inputs file as arrays of the right shape and dtype but no data.

    For checking a file against a model where the data does not matter (a server admitting a
    job): an ``.npz``/``.npy`` is read header by header, each array a zero-stride view, so a
    large file costs no memory. JSON is parsed.
    """
    path = Path(path)
    if _is_json(path):
        return list(iter_array_sets(path))
    if _head(path).startswith(_NPY_MAGIC):
        with open(path, "rb") as f:
            return [{"": _header_view(f)}]
    with zipfile.ZipFile(path) as zf:
        arrays: dict[str, np.ndarray] = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                arrays[info.filename[: -len(".npy")]] = _header_view(f)
    return [dict(s) for s in _split_sets(path, arrays)]


def check_input_file(path: Path | str, signature: Signature) -> int:
    """Check every set of an inputs file against ``signature`` (names, dtypes, shapes) without
    reading array data (:func:`peek_input_sets`); the number of sets. A bad set raises
    :class:`InputMismatch` naming it."""
    path = Path(path)
    sets = peek_input_sets(path)
    is_json = _is_json(path)
    for i, arrays in enumerate(sets):
        try:
            _as_inputs(arrays, signature, json_file=is_json)
        except InputMismatch as exc:
            if len(sets) == 1:
                raise
            raise InputMismatch(f"input set {i}: {exc.message}", detail={"set": i, **(exc.detail or {})}) from None
    return len(sets)


def _header_view(f: Any) -> np.ndarray:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(f)
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def _head(path: Path | str) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


_SET_KEY = re.compile(r"^(\d+)/(.+)$")
T = TypeVar("T")


def iter_array_sets(path: Path) -> Iterator[dict[str, np.ndarray]]:
    """The file's input sets in order, each read when reached (an ``.npz`` stays open meanwhile)."""
    head = _head(path)
    try:
        if head.startswith(_ZIP_MAGIC):
            with np.load(path, allow_pickle=False) as npz:  # lazy: an array is read when its key is
                for keys in _split_sets(path, {k: k for k in npz.files}):
                    yield {name: npz[key] for name, key in keys.items()}
            return
        if head.startswith(_NPY_MAGIC):
            yield {"": np.load(path, allow_pickle=False)}
            return
        data = json.loads(path.read_text())
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputMismatch(f"cannot read inputs file {path.name}: {exc}", detail={"file": str(path)}) from None
    for d in _json_sets(data):
        yield {str(k): np.asarray(v) for k, v in d.items()}


def _json_sets(data: Any) -> list[dict[str, Any]]:
    sets = data if isinstance(data, list) else [data]
    if not sets or not all(isinstance(d, dict) for d in sets):
        raise InputMismatch(
            "a JSON inputs file is an object {input name: nested lists}, or a list of such objects (one per set)",
            detail={"given": type(data).__name__},
        )
    return sets


def _count_sets(path: Path) -> int:
    head = _head(path)
    try:
        if head.startswith(_ZIP_MAGIC):
            with zipfile.ZipFile(path) as zf:
                names = {n[: -len(".npy")]: n for n in zf.namelist() if n.endswith(".npy")}
            return len(_split_sets(path, names))
        if head.startswith(_NPY_MAGIC):
            return 1
        return len(_json_sets(json.loads(path.read_text())))
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputMismatch(f"cannot read inputs file {path.name}: {exc}", detail={"file": str(path)}) from None


def _split_sets(path: Path, entries: Mapping[str, T]) -> list[dict[str, T]]:
    """``{"0/x": a, "1/x": b}`` -> ``[{"x": a}, {"x": b}]``; keys without a set number are one set."""
    numbered = {k: _SET_KEY.match(k) for k in entries}
    if not any(numbered.values()):
        return [dict(entries)]
    plain = [k for k, m in numbered.items() if m is None]
    if plain:
        raise InputMismatch(
            f"{path.name} mixes keys with a set number (SET/name) and without ({', '.join(map(repr, plain[:3]))}); "
            "key every array SET/name, or none",
            detail={"file": str(path), "unnumbered": plain},
        )
    sets: dict[int, dict[str, T]] = {}
    for key, m in numbered.items():
        assert m is not None  # Invariant: checked above.
        sets.setdefault(int(m.group(1)), {})[m.group(2)] = entries[key]
    if sorted(sets) != list(range(len(sets))):
        raise InputMismatch(
            f"{path.name} numbers its input sets {sorted(sets)[:8]}; number them 0, 1, 2, … with no gaps",
            detail={"file": str(path), "sets": sorted(sets)},
        )
    return [sets[i] for i in range(len(sets))]


def _as_inputs(arrays: dict[str, np.ndarray], signature: Signature, *, json_file: bool) -> dict[str, np.ndarray]:
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
    if json_file:
        arrays = {n: _cast_json(specs[n], a) if n in specs else a for n, a in arrays.items()}
    return check_inputs(signature, arrays)


def _is_json(path: Path | str) -> bool:
    head = _head(path)
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
