"""The prediction log: every prediction as a row, written off the request path.

A request only appends a tuple to an in-memory buffer: the request body as it arrived (bytes,
which the garbage collector never has to scan, unlike thousands of parsed feature dicts waiting
for a flush), the scores and a few strings. Every ``flush_interval`` seconds a background thread
hands what has accumulated to a writer, in one of two formats (``SERVING_PREDICTION_LOG_FORMAT``):

* ``jsonl``: each prediction a JSON line, appended to
  ``<dir>/date=YYYY-MM-DD/predictions-<host>-<pid>.jsonl`` (or one object per flush under
  ``s3://bucket/prefix/date=YYYY-MM-DD/``);
* ``parquet``: the same fields as columns, the features typed by the serving model's feature
  spec (:meth:`PredictionLog.declare`), one file per writer every ~30 s under the same
  directories, written beside its name and renamed (:mod:`mlops_serving.predlog_parquet`).

This is what drift monitoring and label joins read (``include/mlops_steps/common/predictions.py``,
which reads both).

Two writers:

* ``"thread"``: the background thread encodes and writes itself, a file per flush (tests,
  benchmarks, tools);
* ``"process"`` (the service): a child process (:func:`main`, at a lower CPU priority) receives
  each flush over a pipe (:mod:`mlops_serving.predlog_process`) in frames of a few dozen
  requests, decodes the bodies again and writes.
  Encoding a 10,000-row batch as lines holds the interpreter lock for ~20 ms; in the service's
  own process that stalls every request in flight (a waiting thread gets the lock back only
  after 5 ms), which was most of the service's p99 latency, so it happens in a process of its
  own. The child answers each frame with how many rows it wrote or failed to write (a Parquet
  frame once its file is written); rows a crashed child never answered are counted as dropped
  and a new child is started.

If the writer falls behind by more than ``max_buffered`` requests, new predictions are dropped
and counted rather than slowing requests down.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlparse

import numpy as np
import orjson

from mlops_serving.config import DEFAULT_PREDICTION_LOG_FORMAT, PREDICTION_LOG_FORMATS
from mlops_serving.predlog_parquet import Answer, Declared, ParquetWriter, declared_of
from mlops_serving.predlog_process import ProcessWriter, serve_pipe

log = logging.getLogger(__name__)

_WRITER_NICENESS = 10  # the writer is background work: requests get the CPU first
_ENTRIES_PER_FRAME = 64  # requests per pipe frame: ~0.1 ms of pickling
_ROWS_PER_FRAME = 10_000  # and rows (a 10,000-row request body is ~4 MB)


class RequestBody(NamedTuple):
    """Features still inside the JSON body they arrived in: ``field`` is ``"features"`` (one
    record) or ``"instances"`` (a list). The writer decodes them, not the request."""

    raw: bytes
    field: str

    def records(self) -> list[Any]:
        value = orjson.loads(self.raw)[self.field]
        return [value] if self.field == "features" else list(value)


# (timestamp, request_id, entity_ids, variant, version, features, scores, out_of_range,
# classes, declared): out_of_range maps a row's index to its features outside their usual range
# (None: no such row); classes is a multiclass model's predicted class per row (None for other
# tasks); declared the version's (feature, kind) pairs, if the service declared them (one
# shared tuple per version: a pipe frame pickles it once).
Entry = tuple[
    float,
    str,
    Sequence[str | None],
    str,
    str,
    RequestBody | Sequence[Any],
    Sequence[float] | np.ndarray,
    Mapping[int, Sequence[str]] | None,
    Sequence[str] | None,
    Declared | None,
]


def encode_lines(entry: Entry) -> list[bytes]:
    """One JSON line per prediction. The per-request fields are encoded once and each row adds
    only its own (a batch of 10,000 rows costs ~2 µs a row, not ~9). A row with values outside
    the usual range names them in ``"out_of_range"`` (absent on the others); a multiclass
    model's rows name their predicted ``"class"``."""
    timestamp, request_id, entity_ids, variant, version, features, scores, flagged, classes = entry[
        :9
    ]
    records = features.records() if isinstance(features, RequestBody) else features
    if len(records) != len(scores):
        raise ValueError(f"request {request_id}: {len(records)} records for {len(scores)} scores")
    head = orjson.dumps(
        {
            "request_id": request_id,
            "timestamp": dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(),
            "variant": variant,
            "model_version": version,
        }
    )[:-1]
    values = scores.tolist() if isinstance(scores, np.ndarray) else list(scores)
    dumps = orjson.dumps
    lines = [
        b'%s,"row":%d,"entity_id":%s,"score":%s,"features":%s}\n'
        % (
            head,
            index,
            dumps(entity_ids[index] if entity_ids else None),
            repr(float(score)).encode(),
            dumps(records[index]),
        )
        for index, score in enumerate(values)
    ]
    if classes is not None:
        for index, label in enumerate(classes):
            lines[index] = b'%s,"class":%s}\n' % (lines[index][:-2], dumps(label))
    for index, names in (flagged or {}).items():
        lines[index] = b'%s,"out_of_range":%s}\n' % (lines[index][:-2], dumps(list(names)))
    return lines


class JsonLinesWriter:
    """Encodes entries and appends them to the sink (a directory or ``s3://bucket/prefix``)."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self._name = f"predictions-{socket.gethostname()}-{os.getpid()}"
        self._sequence = 0
        self._s3 = _s3_location(sink)
        self._s3_client: Any = None

    def write(self, entries: Sequence[Entry]) -> list[Answer]:
        """Write ``entries`` now; answers (rows written, rows that could not be)."""
        chunks: list[bytes] = []
        failed = 0
        for entry in entries:
            try:
                chunks.extend(encode_lines(entry))
            except (ValueError, KeyError, TypeError) as exc:  # never expected: bodies were valid
                failed += len(entry[6])
                log.error("prediction log: cannot encode request %s: %s", entry[1], exc)
        if chunks:
            try:
                self._put(b"".join(chunks))
            except Exception:
                log.exception("prediction log: %d rows not written to %s", len(chunks), self.sink)
                return [(0, failed + len(chunks))]
        return [(len(chunks), failed)]

    def tick(self) -> list[Answer]:
        return []  # lines are written as they come

    def commit(self) -> list[Answer]:
        return []

    def _put(self, payload: bytes) -> None:
        day = dt.datetime.now(dt.UTC).strftime("date=%Y-%m-%d")
        if self._s3 is None:
            path = Path(self.sink) / day / f"{self._name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as handle:
                handle.write(payload)
            return
        if self._s3_client is None:
            import boto3

            self._s3_client = boto3.client("s3")
        bucket, prefix = self._s3
        self._sequence += 1
        key = "/".join(p for p in (prefix, day, f"{self._name}-{self._sequence:08d}.jsonl") if p)
        self._s3_client.put_object(Bucket=bucket, Key=key, Body=payload)


def _s3_location(sink: str) -> tuple[str, str] | None:
    parsed = urlparse(sink)
    return (parsed.netloc, parsed.path.strip("/")) if parsed.scheme == "s3" else None


SinkWriter = JsonLinesWriter | ParquetWriter


def open_writer(sink: str, log_format: str) -> SinkWriter:
    """The writer of ``log_format`` (``jsonl`` or ``parquet``) for ``sink``."""
    if log_format not in PREDICTION_LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {PREDICTION_LOG_FORMATS}")
    if log_format == "parquet":
        return ParquetWriter(sink, _s3_location(sink))
    return JsonLinesWriter(sink)


class PredictionLog:
    """The request-side buffer and the thread that flushes it to a writer."""

    def __init__(
        self,
        sink: str,
        *,
        flush_interval: float = 1.0,
        max_buffered: int = 100_000,
        on_drop: Callable[[int], None] | None = None,
        writer: Literal["thread", "process"] = "thread",
        log_format: str = DEFAULT_PREDICTION_LOG_FORMAT,
    ) -> None:
        self.sink = sink
        self.log_format = log_format
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self._on_drop = on_drop
        self._buffer: collections.deque[Entry] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._sink_writer = open_writer(sink, log_format) if writer == "thread" else None
        self._process = (
            ProcessWriter(sink, on_drop, log_format=log_format) if writer == "process" else None
        )
        self._written = 0
        self._declared: dict[str, Declared] = {}

    @property
    def written_rows(self) -> int:
        """Rows the writer has written (for the process writer: as far as the child told)."""
        return self._process.written_rows if self._process is not None else self._written

    def declare(self, version: str, fields: Sequence[Any]) -> None:
        """The request fields (``FieldSpec``: name, kind) of a model version being served:
        its Parquet rows get the spec's column types instead of types guessed from values."""
        self._declared[str(version)] = declared_of(fields)

    def declaring(self, loader: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
        """``loader`` (name, ref -> a loaded model) that also declares each model it loads."""

        def load(name: str, ref: str) -> Any:
            model = loader(name, ref)
            self.declare(model.version, model.codec.fields)
            return model

        return load

    def record(
        self,
        *,
        request_id: str,
        entity_ids: Sequence[str | None],
        variant: str,
        version: str,
        features: RequestBody | Sequence[Any],
        scores: Sequence[float] | np.ndarray,
        timestamp: float,
        out_of_range: Mapping[int, Sequence[str]] | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        """Queue predictions (cheap: no I/O, no encoding on the caller's thread).
        ``out_of_range``: by row index, the features outside their usual range; ``classes``:
        a multiclass model's predicted class per row."""
        if len(self._buffer) >= self.max_buffered:  # deque length and append are thread-safe
            if self._on_drop:
                self._on_drop(len(scores))
            return
        self._buffer.append(
            (timestamp, request_id, entity_ids, variant, version, features, scores, out_of_range,
             classes, self._declared.get(version))
        )  # fmt: skip

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self._process is not None:
            self._process.close()  # the child writes what it still holds, then exits

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # keep logging alive; the next flush retries what it can
                log.exception("prediction log flush failed")

    def flush(self, wait: float = 0.0) -> int:
        """Hand everything buffered so far to the writer; returns the number of predictions
        handed over. With the process writer, ``wait`` seconds for the child to write them
        (a Parquet writer writes its file now instead of when it is due)."""
        with self._flush_lock:
            if self._process is not None:
                # Small frames: pickling one holds the interpreter lock, sending it lets go.
                handed, pending, frame, rows = 0, len(self._buffer), [], 0
                while pending:
                    entry = self._buffer.popleft()
                    pending -= 1
                    frame.append(entry)
                    rows += len(entry[6])
                    if not pending or len(frame) == _ENTRIES_PER_FRAME or rows >= _ROWS_PER_FRAME:
                        handed += self._process.write(frame)
                        frame, rows = [], 0
                if wait:
                    self._process.commit()
                    self._process.wait(wait)
                else:
                    self._process.tick()  # a Parquet writer's file, once it is due
                return handed
            entries = []
            while self._buffer:
                entries.append(self._buffer.popleft())
            if not entries:
                return 0
            assert self._sink_writer is not None
            answers = [*self._sink_writer.write(entries), *self._sink_writer.commit()]
            written = sum(w for w, _ in answers)
            failed = sum(f for _, f in answers)
            self._written += written
            if failed and self._on_drop:
                self._on_drop(failed)
            return written


def main(argv: Sequence[str] | None = None) -> int:
    """The writer process :class:`~mlops_serving.predlog_process.ProcessWriter` starts: writes
    what the service sends until the service closes the pipe."""
    parser = argparse.ArgumentParser(description="The model service's prediction log writer.")
    parser.add_argument("--sink", required=True, help="a directory or s3://bucket/prefix")
    parser.add_argument("--format", default=DEFAULT_PREDICTION_LOG_FORMAT,
                        choices=PREDICTION_LOG_FORMATS)  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The service's shutdown (or its death) closes the pipe; until then keep writing, also when
    # a terminal's Ctrl-C or a process-group SIGTERM reaches this process too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(_WRITER_NICENESS)
    serve_pipe(open_writer(args.sink, args.format), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
