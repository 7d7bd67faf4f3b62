"""The prediction log as Parquet: the writer's buffer of rows and the files it rolls.

Each flush the service hands over is decoded into columns at once (Arrow arrays: ~250 bytes a
row, not the ~1.5 KB of parsed dicts) and buffered; a file is written when the buffer is
``FILE_SECONDS`` old or holds ``FILE_ROWS`` rows, when the service asks (``commit``: a test, a
shutdown) and when the pipe closes. One file per such window and writer, not per flush: the
service flushes every 250 ms, and a monitoring run reading an hour of 250 ms files would spend
its time opening 14,400 of them.

A row carries what a JSON line carries, as columns: ``request_id``, ``timestamp`` (UTC,
microseconds: the JSON line's ISO text), ``variant``, ``model_version``, ``row``,
``entity_id``, ``score``, ``features`` (a struct, one field per feature), ``class`` and
``out_of_range`` (null where the JSON line has no such key). The features' types come from
the serving model's feature spec (:meth:`mlops_serving.predlog.PredictionLog.declare`):
integer -> int64, float -> float64, category -> string, boolean -> bool; a version nobody
declared is typed from its values (numbers as float64). Rows of versions with different
feature types go to separate files, so a file has one schema.

Files are written beside their final name and renamed (S3: one ``put_object``), so a reader
never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from mlops_serving.predlog import Entry

log = logging.getLogger(__name__)

FILE_SECONDS = 30.0  # a file per writer at most this often (and at FILE_ROWS)
FILE_ROWS = 262_144  # ~65 MB of 20-feature rows in the writer's memory
ROW_GROUP_ROWS = 131_072  # what a reader reads at once; statistics per group prune by time
_BATCH_ROWS = 16_384  # Python lists become Arrow arrays every this many rows
COMPRESSION = "zstd"

#: A feature kind's column type; a spec names the kind (mlops_serving.spec.KINDS).
KIND_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "category": pa.string(),
    "boolean": pa.bool_(),
}
#: The columns before and after the features, as the JSON line orders its keys.
META_TYPES: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "variant": pa.string(),
    "model_version": pa.string(),
    "row": pa.int64(),
    "entity_id": pa.string(),
    "score": pa.float64(),
}
TAIL_TYPES: dict[str, pa.DataType] = {"class": pa.string(), "out_of_range": pa.list_(pa.string())}

#: A version's declared features: (name, kind) pairs in the spec's order.
Declared = tuple[tuple[str, str], ...]


def _column(values: list[Any], kind: str | None, name: str) -> pa.Array:
    """One feature's values as its kind's type; values that do not fit it (never expected:
    the service validated them) as float64 (an integer column), else as text (JSON text for
    what is not a string)."""
    wanted = KIND_TYPES.get(kind or "")
    if wanted is None:  # undeclared: typed from the values, numbers always as float64
        numbers = all(v is None or type(v) in (int, float) for v in values)
        wanted = pa.float64() if numbers and any(v is not None for v in values) else None
    try:
        return pa.array(values, type=wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if wanted == pa.int64():  # an integer feature sent as 1e300: the value, as a float
        try:
            return pa.array(values, type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    log.warning("prediction log: feature %r holds values of mixed types; logged as text", name)
    return pa.array(
        [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values]
    )


class _Columns:
    """Rows of one schema being collected: Python lists until ``_BATCH_ROWS``, then batches."""

    def __init__(self, declared: Declared | None) -> None:
        self.declared = declared
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self._reset()

    def _reset(self) -> None:
        self.meta: dict[str, list[Any]] = {name: [] for name in META_TYPES}
        self.classes: list[str | None] = []
        self.flagged: list[list[str] | None] = []
        self.records: list[Any] = []  # feature dicts; encoded per column at the batch

    def add(self, entry: Entry) -> int:
        """Collect one request's rows; everything is checked before anything is kept."""
        timestamp, request_id, entity_ids, variant, version, features, scores, flagged, classes = (
            entry[:9]
        )
        records = features.records() if hasattr(features, "records") else list(features)
        count = len(scores)
        if len(records) != count:
            raise ValueError(f"request {request_id}: {len(records)} records for {count} scores")
        if not all(isinstance(record, dict) for record in records):
            raise TypeError(f"request {request_id}: a record is not an object")
        values = [float(v) for v in (scores.tolist() if isinstance(scores, np.ndarray) else scores)]
        ids = list(entity_ids) if entity_ids else [None] * count
        labels = list(classes) if classes is not None else [None] * count
        if len(ids) != count or len(labels) != count:
            raise ValueError(f"request {request_id}: ids or classes do not match its rows")
        marks: list[list[str] | None] = [None] * count
        for index, names in (flagged or {}).items():
            marks[index] = [str(name) for name in names]  # an unknown row: IndexError
        stamp = dt.datetime.fromtimestamp(timestamp, dt.UTC)  # as the JSON line spells it
        meta = self.meta
        meta["request_id"].extend([request_id] * count)
        meta["timestamp"].extend([stamp] * count)
        meta["variant"].extend([variant] * count)
        meta["model_version"].extend([version] * count)
        meta["row"].extend(range(count))
        meta["entity_id"].extend(ids)
        meta["score"].extend(values)
        self.classes.extend(labels)
        self.flagged.extend(marks)
        self.records.extend(records)
        self.rows += count
        if len(self.records) >= _BATCH_ROWS:
            self.seal()
        return count

    def seal(self) -> None:
        """Turn the collected lists into one Arrow batch."""
        if not self.records:
            return
        if self.declared is not None:
            kinds: dict[str, str | None] = dict(self.declared)
        else:  # every key any record has, in first-seen order
            kinds = dict.fromkeys(key for record in self.records for key in record)
        if kinds:
            features = pa.StructArray.from_arrays(
                [_column([r.get(n) for r in self.records], k, n) for n, k in kinds.items()],
                names=list(kinds),
            )
        else:
            features = pa.array([{}] * len(self.records), type=pa.struct([]))
        arrays = [pa.array(self.meta[n], type=t) for n, t in META_TYPES.items()]
        arrays += [
            features,
            pa.array(self.classes, type=TAIL_TYPES["class"]),
            pa.array(self.flagged, type=TAIL_TYPES["out_of_range"]),
        ]
        names = [*META_TYPES, "features", *TAIL_TYPES]
        self.batches.append(pa.RecordBatch.from_arrays(arrays, names=names))
        self._reset()

    def table(self) -> pa.Table:
        self.seal()
        return pa.concat_tables(
            [pa.Table.from_batches([b]) for b in self.batches], promote_options="permissive"
        )


class ParquetBuffer:
    """The writer's rows until they go to a file; see the module docstring."""

    def __init__(
        self,
        put: Callable[[pa.Table], None],
        *,
        file_seconds: float = FILE_SECONDS,
        file_rows: int = FILE_ROWS,
    ) -> None:
        self._put = put
        self.file_seconds = file_seconds
        self.file_rows = file_rows
        self._groups: dict[Declared | None, _Columns] = {}
        self.rows = 0
        self.since: float | None = None  # monotonic time of the oldest buffered row

    def add(self, entry: Entry, declared: Declared | None) -> int:
        """Buffer one request's rows (ValueError/KeyError/TypeError: it cannot be decoded)."""
        group = self._groups.get(declared)
        if group is None:
            group = self._groups[declared] = _Columns(declared)
        count = group.add(entry)
        self.rows += count
        if self.since is None:
            self.since = time.monotonic()
        return count

    def due(self) -> bool:
        """Whether the buffer should become a file now (old enough, or full)."""
        if not self.rows or self.since is None:
            return False
        return self.rows >= self.file_rows or time.monotonic() - self.since >= self.file_seconds

    def commit(self) -> int:
        """Write the buffered rows (a file per schema); returns how many. Raises what the
        sink raises; the rows are gone either way (the caller counts them)."""
        groups, rows = self._groups, self.rows
        self._groups, self.rows, self.since = {}, 0, None
        for group in groups.values():
            if group.rows:
                self._put(group.table())
        return rows


class ParquetSink:
    """Puts tables as files in a directory or as objects under ``s3://bucket/prefix``."""

    def __init__(self, sink: str, s3: tuple[str, str] | None) -> None:
        self.sink = sink
        self._s3 = s3
        self._s3_client: Any = None
        self._name = f"predictions-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._sequence = 0

    def put(self, table: pa.Table) -> None:
        self._sequence += 1
        day = dt.datetime.now(dt.UTC).strftime("date=%Y-%m-%d")
        name = f"{self._name}-{self._sequence:06d}.parquet"
        options = {"row_group_size": ROW_GROUP_ROWS, "compression": COMPRESSION}
        if self._s3 is None:
            directory = Path(self.sink) / day
            directory.mkdir(parents=True, exist_ok=True)
            temporary = directory / f".{name}.tmp"
            try:
                with temporary.open("wb") as handle:
                    pq.write_table(table, handle, **options)
                    handle.flush()
                    os.fsync(handle.fileno())
                temporary.replace(directory / name)
            finally:
                temporary.unlink(missing_ok=True)
            return
        if self._s3_client is None:
            import boto3

            self._s3_client = boto3.client("s3")
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, **options)
        bucket, prefix = self._s3
        key = "/".join(p for p in (prefix, day, name) if p)
        self._s3_client.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue().to_pybytes())


#: Rows written and rows that could not be, per flush handed to a writer (the pipe's answers).
Answer = tuple[int, int]


class ParquetWriter:
    """The writer's side for Parquet: buffers flushes, answers them when their file is written
    (or lost: then every row of it counts as failed)."""

    def __init__(self, sink: str, s3: tuple[str, str] | None, **roll: Any) -> None:
        self.sink = sink
        self._files = ParquetSink(sink, s3)
        self._buffer = ParquetBuffer(self._put, **roll)
        self._pending: list[list[int]] = []  # [rows buffered, rows failed] per flush

    def write(self, entries: Sequence[Entry]) -> list[Answer]:
        buffered = failed = 0
        for entry in entries:
            try:
                buffered += self._buffer.add(entry, entry[9] if len(entry) > 9 else None)
            except (ValueError, KeyError, TypeError, IndexError) as exc:  # bodies were valid
                failed += len(entry[6])
                log.error("prediction log: cannot encode request %s: %s", entry[1], exc)
        self._pending.append([buffered, failed])
        return self.commit() if self._buffer.rows >= self._buffer.file_rows else []

    def _put(self, table: pa.Table) -> None:
        self._files.put(table)

    def tick(self) -> list[Answer]:
        """A file, if the buffer is old enough; the answers it settles."""
        return self.commit() if self._buffer.due() else []

    def commit(self) -> list[Answer]:
        """Write everything buffered now; answers for every flush not answered yet."""
        pending, self._pending = self._pending, []
        try:
            self._buffer.commit()
        except Exception:
            lost = sum(buffered for buffered, _ in pending)
            log.exception("prediction log: %d rows not written to %s", lost, self.sink)
            return [(0, buffered + failed) for buffered, failed in pending]
        return [(buffered, failed) for buffered, failed in pending]


def declared_of(fields: Sequence[Any]) -> Declared:
    """(name, kind) pairs of a model's request fields (mlops_serving.codec.FieldSpec)."""
    return tuple((str(f.name), str(f.kind)) for f in fields)
