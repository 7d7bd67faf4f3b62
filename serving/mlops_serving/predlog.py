"""The prediction log: every prediction as a JSON line, written off the request path.

A request only appends a tuple to an in-memory buffer: the request body as it arrived (bytes,
which the garbage collector never has to scan, unlike thousands of parsed feature dicts waiting
for a flush), the scores and a few strings. Every ``flush_interval`` seconds a background thread
hands what has accumulated to a writer, which turns each prediction into a JSON line and appends
them to ``<dir>/date=YYYY-MM-DD/predictions-<host>-<pid>.jsonl``, or puts them as one object per
flush under ``s3://bucket/prefix/date=YYYY-MM-DD/``. This is what drift monitoring and label joins
read (``include/mlops_steps/predictions.py``).

Two writers:

* ``"thread"``: the background thread encodes and writes itself (tests, benchmarks, tools);
* ``"process"`` (the service): a child process (:func:`main`, at a lower CPU priority) receives
  each flush over a pipe in frames of a few dozen requests, decodes the bodies again and writes.
  Encoding a 10,000-row batch as lines holds the interpreter lock for ~20 ms; in the service's
  own process that stalls every request in flight (a waiting thread gets the lock back only
  after 5 ms), which was most of the service's p99 latency, so it happens in a process of its
  own. The child answers each frame with how many rows it wrote or failed to write; rows a
  crashed child never answered are counted as dropped and a new child is started.

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
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple
from urllib.parse import urlparse

import numpy as np
import orjson

log = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct("<Q")  # byte length of the pickled flush that follows
_RESTART_BACKOFF_S = 5.0  # a child that keeps dying is restarted at most this often
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


# (timestamp, request_id, entity_ids, variant, version, features, scores)
Entry = tuple[
    float,
    str,
    Sequence[str | None],
    str,
    str,
    RequestBody | Sequence[Any],
    Sequence[float] | np.ndarray,
]


def encode_lines(entry: Entry) -> list[bytes]:
    """One JSON line per prediction. The per-request fields are encoded once and each row adds
    only its own (a batch of 10,000 rows costs ~2 µs a row, not ~9)."""
    timestamp, request_id, entity_ids, variant, version, features, scores = entry
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
    return [
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


def _rows(entries: Sequence[Entry]) -> int:
    return sum(len(entry[6]) for entry in entries)


class SinkWriter:
    """Encodes entries and appends them to the sink (a directory or ``s3://bucket/prefix``)."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self._name = f"predictions-{socket.gethostname()}-{os.getpid()}"
        self._sequence = 0
        parsed = urlparse(sink)
        self._s3 = (parsed.netloc, parsed.path.strip("/")) if parsed.scheme == "s3" else None
        self._s3_client: Any = None

    def write(self, entries: Sequence[Entry]) -> tuple[int, int]:
        """Write ``entries``; returns (rows written, rows that could not be)."""
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
                return 0, failed + len(chunks)
        return len(chunks), failed

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


# Run by import, not as ``-m``: entries pickled by the service name mlops_serving.predlog's
# classes, which must be the ones the writer's code checks against.
_CHILD_MAIN = "import sys; from mlops_serving.predlog import main; sys.exit(main())"


class _Child:
    """One writer process and the flushes it has not answered yet (rows per flush)."""

    def __init__(self, sink: str) -> None:
        package_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_MAIN, "--sink", sink],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.in_flight: collections.deque[int] = collections.deque()
        self.reader: threading.Thread | None = None  # reads its answers (ProcessWriter)


class ProcessWriter:
    """Hands entries to a child process that writes them (see the module docstring)."""

    def __init__(
        self,
        sink: str,
        on_drop: Callable[[int], None] | None = None,
        *,
        restart_backoff_s: float = _RESTART_BACKOFF_S,
    ) -> None:
        self.sink = sink
        self._on_drop = on_drop
        self._child: _Child | None = None
        self._restart_backoff_s = restart_backoff_s
        self._started_at = -restart_backoff_s
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self.written_rows = 0

    @property
    def pid(self) -> int | None:
        """The writer process's pid (None before the first flush)."""
        child = self._child
        return child.process.pid if child is not None else None

    def _current(self) -> _Child | None:
        """The running child, or a new one (at most one start per backoff period)."""
        if self._child is not None and self._child.process.poll() is None:
            return self._child
        if time.monotonic() - self._started_at < self._restart_backoff_s:
            return None
        self._started_at = time.monotonic()
        self._child = child = _Child(self.sink)
        child.reader = threading.Thread(
            target=self._read_answers, args=(child,), name="prediction-log-answers", daemon=True
        )
        child.reader.start()
        return child

    def write(self, entries: Sequence[Entry]) -> int:
        """Send one flush to the child; returns the rows handed over (0 if they were dropped)."""
        rows = _rows(entries)
        frame = pickle.dumps(list(entries), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            child = self._current()
            if child is not None:
                child.in_flight.append(rows)
        if child is None:
            self._drop(rows, "the writer process is restarting")
            return 0
        pipe = child.process.stdin
        assert pipe is not None
        try:
            pipe.write(_FRAME_HEADER.pack(len(frame)))
            pipe.write(frame)
            pipe.flush()
        except OSError as exc:  # the child died; its answer reader counts the rows as dropped
            log.error("prediction log writer process is gone (%s); starting a new one", exc)
            return 0
        return rows

    def _read_answers(self, child: _Child) -> None:
        """One line per flush from the child: rows written, rows failed; at its exit, whatever
        it never answered is dropped."""
        assert child.process.stdout is not None
        # Counters are updated before a flush counts as answered, so whoever waits sees them.
        for line in child.process.stdout:
            written, failed = (int(x) for x in line.split())
            if failed:
                self._drop(failed, "the writer could not write them")
            with self._lock:
                if child.in_flight:
                    child.in_flight.popleft()
                self.written_rows += written
                self._answered.notify_all()
        child.process.wait()  # once reaped, write() starts a new child instead of using this one
        with self._lock:
            lost = sum(child.in_flight)
        if lost:
            self._drop(lost, f"the writer process exited with {child.process.returncode}")
        with self._lock:
            child.in_flight.clear()
            self._answered.notify_all()

    def _drop(self, rows: int, why: str) -> None:
        log.error("prediction log: %d rows not written: %s", rows, why)
        if self._on_drop:
            self._on_drop(rows)

    def wait(self, timeout: float) -> bool:
        """Wait until the child has answered (or lost) every flush sent so far."""
        with self._lock:
            child = self._child
            if child is None:
                return True
            return self._answered.wait_for(lambda: not child.in_flight, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Close the pipe; the child writes what it was sent and exits."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        with contextlib.suppress(OSError):
            assert child.process.stdin is not None
            child.process.stdin.close()
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("prediction log writer did not finish in %.0fs; killing it", timeout)
            child.process.kill()
            child.process.wait()
        if child.reader is not None:
            child.reader.join(timeout)  # its last answers counted before close returns


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
    ) -> None:
        self.sink = sink
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self._on_drop = on_drop
        self._buffer: collections.deque[Entry] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self._sink_writer = SinkWriter(sink) if writer == "thread" else None
        self._process = ProcessWriter(sink, on_drop) if writer == "process" else None
        self._written = 0

    @property
    def written_rows(self) -> int:
        """Rows the writer has written (for the process writer: as far as the child told)."""
        return self._process.written_rows if self._process is not None else self._written

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
    ) -> None:
        """Queue predictions (cheap: no I/O, no encoding on the caller's thread)."""
        if len(self._buffer) >= self.max_buffered:  # deque length and append are thread-safe
            if self._on_drop:
                self._on_drop(len(scores))
            return
        self._buffer.append((timestamp, request_id, entity_ids, variant, version, features, scores))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        if self._process is not None:
            self._process.close()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # keep logging alive; the next flush retries what it can
                log.exception("prediction log flush failed")

    def flush(self, wait: float = 0.0) -> int:
        """Hand everything buffered so far to the writer; returns the number of predictions
        handed over. With the process writer, ``wait`` seconds for the child to write them."""
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
                    self._process.wait(wait)
                return handed
            entries = []
            while self._buffer:
                entries.append(self._buffer.popleft())
            if not entries:
                return 0
            assert self._sink_writer is not None
            written, failed = self._sink_writer.write(entries)
            self._written += written
            if failed and self._on_drop:
                self._on_drop(failed)
            return written


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise EOFError(f"prediction log pipe closed mid-frame ({len(data)} of {size} bytes)")
    return data


def serve_pipe(sink: str, source: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: read flushes until the pipe closes, write each, answer with counts."""
    writer = SinkWriter(sink)
    while (header := _read_exactly(source, _FRAME_HEADER.size)) is not None:
        (size,) = _FRAME_HEADER.unpack(header)
        body = _read_exactly(source, size)
        if body is None:
            raise EOFError("prediction log pipe closed after a frame header")
        entries = pickle.loads(body)  # noqa: S301 (our own parent, over a private pipe)
        written, failed = writer.write(entries)
        answers.write(b"%d %d\n" % (written, failed))
        answers.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The model service's prediction log writer.")
    parser.add_argument("--sink", required=True, help="a directory or s3://bucket/prefix")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The service's shutdown (or its death) closes the pipe; until then keep writing, also when
    # a terminal's Ctrl-C or a process-group SIGTERM reaches this process too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(_WRITER_NICENESS)
    serve_pipe(args.sink, sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
