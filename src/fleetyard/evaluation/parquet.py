"""Parquet data sets for evaluations: a column is an array, a row is a sample.

A data set is one ``.parquet`` file or a folder of them (its ``*.parquet`` files in name order,
one after another, as one table). Each column converts to one array with the samples on the
leading axis:

- a column of numbers (or booleans) is a 1-D array;
- a column of fixed-size lists (``fixed_size_list<float, 4>``) is a 2-D array ``[rows, 4]``,
  one more axis for each level of nesting (``fixed_size_list<fixed_size_list<…, 28>, 28>``);
- a column of ordinary lists becomes the same when every row's list has one length (else it
  is refused, naming the column); a null anywhere is refused.

Numbers keep their Parquet type (``float`` is float32, ``double`` float64): nothing is cast.

Sharding reads no more than a rank needs: rank ``r`` of ``K`` takes the contiguous rows
``[n*r//K, n*(r+1)//K)`` (:func:`block`) and reads only the row groups that overlap them, and only
the columns it needs. (The ``.npz`` and generated data sets shard by ``index % K``; which rank
scores which sample does not change the job's metrics, and every record keeps its global index.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAGIC", "ParquetShard", "block", "is_parquet", "parquet_files", "read_shard"]

MAGIC = b"PAR1"  # a Parquet file starts (and ends) with it


class ParquetError(ValueError):
    """A data set that is not readable as the eval kind needs it; the message says what to change."""


def is_parquet(path: Path) -> bool:
    """A Parquet file (by its magic bytes: a blob has no suffix), or a folder holding some."""
    if path.is_dir():
        return any(path.glob("*.parquet"))
    with path.open("rb") as f:
        return f.read(4) == MAGIC


def parquet_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.glob("*.parquet") if p.is_file())
    if not files:
        raise ParquetError(f"the data set folder {path} holds no .parquet files")
    return files


def block(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous rows of ``n``: sizes differ by one at most, every row once."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return range(n * rank // world_size, n * (rank + 1) // world_size)


@dataclass
class ParquetShard:
    """A rank's rows: their global indices, and each column read as an array (rows on axis 0)."""

    rows: range
    columns: dict[str, np.ndarray]
    row_groups_read: int  # of row_groups_total: what the rank read
    row_groups_total: int


def read_shard(
    path: Path,
    *,
    inputs: Sequence[str],
    rank: int = 0,
    world_size: int = 1,
) -> ParquetShard:
    """Rank ``rank``'s rows of the data set at ``path``: the columns named by ``inputs`` and those
    of ``labels`` / ``targets`` that exist. One input with one other column needs no particular
    name (that column is the input). Raises :class:`ParquetError` saying which columns are needed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = parquet_files(path)
    try:
        handles = [pq.ParquetFile(f) for f in files]
    except (OSError, pa.ArrowException) as exc:
        raise ParquetError(f"the data set is not a readable Parquet file: {exc}") from None
    schema = handles[0].schema_arrow
    for f, h in zip(files[1:], handles[1:], strict=True):
        if not h.schema_arrow.equals(schema):
            raise ParquetError(
                f"{f.name}'s columns differ from {files[0].name}'s: every file of a data set has the same columns"
            )
    have = list(schema.names)
    wanted = _columns(have, list(inputs))
    groups = [(h, g, h.metadata.row_group(g).num_rows) for h in handles for g in range(h.metadata.num_row_groups)]
    n = sum(rows for _, _, rows in groups)
    rows = block(n, rank, world_size)
    tables = []
    start = 0
    read = 0
    for h, g, count in groups:
        lo, hi = max(start, rows.start), min(start + count, rows.stop)
        if lo < hi:
            table = h.read_row_group(g, columns=list(wanted.values()))
            tables.append(table.slice(lo - start, hi - lo))
            read += 1
        start += count
    table = pa.concat_tables(tables) if tables else schema.empty_table().select(list(wanted.values()))
    columns = {key: _array(name, table.column(name)) for key, name in wanted.items()}
    return ParquetShard(rows, columns, read, len(groups))


def _columns(have: list[str], inputs: list[str]) -> dict[str, str]:
    """Key (input name, ``labels``, ``targets``) -> the column read for it."""
    out: dict[str, str] = {k: k for k in ("labels", "targets") if k in have}
    rest = [c for c in have if c not in out]
    if len(inputs) == 1 and len(rest) == 1:
        out[inputs[0]] = rest[0]
    else:
        out.update({name: name for name in inputs if name in have})
    missing = [name for name in inputs if name not in out]
    if missing or not ({"labels", "targets"} & set(out)):
        needed = ", ".join(f"{name!r} (input)" for name in inputs)
        raise ParquetError(
            f"the Parquet data set needs columns {needed} and 'labels' (integers: top-1/top-5) and/or 'targets' "
            f"(floats shaped like the output: MSE); it has {', '.join(map(repr, have)) or 'none'}"
            + (f"; missing {', '.join(map(repr, missing))}" if missing else ""),
        )
    return out


def _array(name: str, column: Any) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        raise ParquetError(f"column {name!r} has {column.null_count} null(s): every sample needs a value")
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape: list[int] = [len(arr)]
    while True:
        t = arr.type
        if pa.types.is_fixed_size_list(t):
            shape.append(t.list_size)
            arr = arr.flatten()
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != lengths[0]).any():
                raise ParquetError(
                    f"column {name!r} holds lists of different lengths ({int(lengths.min())} to {int(lengths.max())}): "
                    "a sample's input has one shape; store it as a fixed-size list"
                )
            shape.append(int(lengths[0]) if len(lengths) else 0)
            arr = arr.flatten()
        else:
            break
        if arr.null_count:
            raise ParquetError(f"column {name!r} has null elements: every sample needs a value")
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
        raise ParquetError(f"column {name!r} is of type {column.type}: numbers, or (fixed-size) lists of numbers")
    return np.asarray(arr.to_numpy(zero_copy_only=False)).reshape(shape)
