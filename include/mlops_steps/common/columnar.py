"""Partitions written and read in chunks, so a step's memory follows the columns and rows it uses.

A 10M-row partition read whole, with text as Python strings, needs ~7 GB; these helpers keep a
step near what it actually holds:

- :class:`ChunkedPartitionWriter` writes a partition chunk by chunk (one Parquet row group each)
  to an attempt-scoped temporary file, hashing the content as it goes: the same rows give the same
  ``data_sha256`` as :func:`~mlops_steps.common.storage.frame_sha256` of the whole frame,
  whatever the chunking.
- :func:`lean_frame` stores the contract's category features as pandas ``category`` (one byte
  per value instead of a string object) and the id column as Arrow-backed strings.
- :class:`PartitionFile` reads only the columns a step names, of only the rows it keeps (a mask
  applied batch by batch at the Arrow level), and computes the train/valid/hold-out split from the
  id column a batch at a time (:func:`~mlops_steps.common.metrics.split_frame`'s buckets).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_steps.common.storage import (
    Partition,
    attempt_tag,
    checked_manifest,
    fsync_dir,
    sha256_file,
)
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError

#: Rows per generated chunk, per Parquet row group and per read batch: big enough that per-batch
#: overhead vanishes (~1 % at 100k-row batches), small enough that a chunk's temporaries of a
#: 20-column table stay near 200 MB.
CHUNK_ROWS = 1_000_000
ARROW_STRING = pd.StringDtype("pyarrow")


def to_pandas(table: pa.Table, **options: Any) -> pd.DataFrame:
    """``table`` as pandas with the dtypes ingest wrote; a column written as a pandas string
    column comes back Arrow-backed (pandas' default storage would copy it into Python objects)."""
    with pd.option_context("mode.string_storage", "pyarrow"):
        return table.to_pandas(**options)


def lean_frame(frame: pd.DataFrame, contract: ModelContract, id_column: str | None) -> pd.DataFrame:
    """``frame`` with each text category feature as ``category`` (categories: the values seen,
    so an unknown value stays visible to validate) and the id column as Arrow strings."""
    converted: dict[str, pd.Series] = {}
    for name in contract.categorical_features:
        column = frame.get(name)
        text = column is not None and (
            pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
        )
        if text and not isinstance(column.dtype, pd.CategoricalDtype):
            converted[name] = column.astype("category")
    if id_column and id_column in frame and pd.api.types.is_object_dtype(frame[id_column]):
        ids = frame[id_column]
        # Only an all-text id: numbers or missing ids stay as they are, for validate to name.
        if len(ids) and pd.api.types.infer_dtype(ids, skipna=False) == "string":
            converted[id_column] = ids.astype(ARROW_STRING)
    if not converted:
        return frame
    return frame.assign(**converted)


def plain_values(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``category`` and Arrow string columns as plain objects (what a request or
    an MLflow input example holds); cheap: the object array points at the shared category
    strings."""
    lean = [
        c
        for c, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype)
    ]
    if not lean:
        return frame
    return frame.assign(**{str(c): frame[c].astype(object) for c in lean})


def _row_hashes(frame: pd.DataFrame) -> bytes:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()


def dtypes_header(frame: pd.DataFrame) -> bytes:
    """What :func:`~mlops_steps.common.storage.frame_sha256` hashes before the rows."""
    return json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode()


class ChunkedPartitionWriter:
    """Write a partition's data file chunk by chunk, atomically, hashing content and bytes.

    The first chunk fixes the schema; a later chunk whose pandas dtypes differ is refused (its
    rows would hash and read back differently). ``commit`` fsyncs and renames the file into place
    and returns the sha256 of the bytes this writer wrote; ``discard`` removes the temporary file.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{attempt_tag()}.", suffix=".tmp"
        )
        os.close(fd)
        self.path, self.tmp = path, Path(name)
        self._writer: pq.ParquetWriter | None = None
        self._dtypes: bytes | None = None
        self._content = hashlib.sha256()
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        header = dtypes_header(frame)
        if self._dtypes is None:
            self._dtypes = header
            self._content.update(header)
        elif header != self._dtypes:
            raise StepError(
                f"a chunk's column types {header.decode()} differ from the first chunk's "
                f"{self._dtypes.decode()}",
                subject=str(self.path),
                fix="make the source's column types consistent (e.g. no text in a numeric column)",
            )
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
        else:
            table = table.cast(self._writer.schema)  # e.g. int8 vs int16 dictionary indices
        self._writer.write_table(table, row_group_size=CHUNK_ROWS)
        self._content.update(_row_hashes(frame))
        self.rows += len(frame)

    @property
    def data_sha256(self) -> str:
        """The content hash of the rows written so far (== frame_sha256 of their concatenation)."""
        return self._content.hexdigest()

    def commit(self) -> str:
        if self._writer is None:
            raise StepError("no rows were written", subject=str(self.path))
        self._writer.close()
        with self.tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(self.tmp)
        self.tmp.replace(self.path)
        fsync_dir(self.path.parent)
        return digest

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def chunks_of(frame: pd.DataFrame, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """``frame`` in slices of ``rows`` (views, not copies); an empty frame is one empty chunk."""
    if frame.empty:
        yield frame
        return
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows]


@dataclass(frozen=True)
class PartitionFile:
    """A partition's data file, checked against its manifest, read by columns and rows."""

    partition: Partition
    manifest: dict[str, Any]

    @classmethod
    def open(cls, partition: Partition) -> PartitionFile:
        """Check the data file against the checksum its manifest recorded."""
        manifest = checked_manifest(partition)
        return cls(partition, manifest)

    @cached_property
    def _file(self) -> pq.ParquetFile:
        return pq.ParquetFile(self.partition.data)

    @property
    def rows(self) -> int:
        return int(self._file.metadata.num_rows)

    @property
    def columns(self) -> list[str]:
        return list(self._file.schema_arrow.names)

    def _batches(self, columns: Sequence[str]) -> Iterable[pa.RecordBatch]:
        return self._file.iter_batches(batch_size=CHUNK_ROWS, columns=list(columns))

    def split_buckets(self, id_column: str) -> np.ndarray:
        """Each row's bucket (0-99) of the hashed id, as ``split_frame`` computes it, from the
        id column alone, a batch at a time."""
        from mlops_steps.common.metrics import id_buckets

        parts = [id_buckets(batch.column(0).to_pandas()) for batch in self._batches([id_column])]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)

    def read(self, columns: Sequence[str], keep: np.ndarray | None = None) -> pd.DataFrame:
        """``columns`` of the rows where ``keep`` is true (all rows without a mask), with the
        pandas dtypes ingest wrote (category features as ``category``)."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise StepError(
                f"has no column(s) {missing}",
                subject=str(self.partition.data),
                fix="re-run 'ingest' and 'validate' for this partition",
            )
        if keep is not None and len(keep) != self.rows:
            raise ValueError(f"mask of {len(keep)} rows for a file of {self.rows}")
        batches, offset = [], 0
        for batch in self._batches(columns):
            if keep is None:
                batches.append(batch)
                continue
            size = batch.num_rows
            batches.append(batch.filter(pa.array(keep[offset : offset + size])))
            offset += size
        full = self._file.schema_arrow
        schema = pa.schema([full.field(c) for c in columns], metadata=full.metadata)
        table = pa.Table.from_batches(batches, schema=schema)
        del batches  # the table holds the only reference, so self_destruct can free them
        # self_destruct: each column's Arrow buffers are freed as it becomes a pandas column;
        # split_blocks: one block per column, so a step can drop columns one by one.
        return to_pandas(table, self_destruct=True, split_blocks=True)
