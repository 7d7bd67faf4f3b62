"""The prediction log's writer process: the pipe between the service and the child that writes.

The service's end is :class:`ProcessWriter`: it starts the child (``mlops_serving.predlog``'s
:func:`~mlops_serving.predlog.main`), sends each flush as a frame (its byte length, then the pickled
entries) and counts the child's answers, one line per frame: rows written, rows failed. Two
header values carry no frame: ``TICK`` (sent after each flush: a Parquet writer writes its file
if it is due) and ``COMMIT`` (write everything now: a test or a caller waiting for its rows). A
Parquet writer answers a frame when the file holding it is written, so answers may come a
while after their frames. The child's end is :func:`serve_pipe`. Why a process at all: see
:mod:`mlops_serving.predlog`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from mlops_serving.predlog import Entry, SinkWriter

log = logging.getLogger(__name__)

_FRAME_HEADER = struct.Struct("<Q")  # byte length of the pickled flush that follows
TICK = 0  # header values without a frame (see the module docstring)
COMMIT = (1 << 64) - 1
_RESTART_BACKOFF_S = 5.0  # a child that keeps dying is restarted at most this often


def _rows(entries: Sequence[Entry]) -> int:
    return sum(len(entry[6]) for entry in entries)


# Run by import, not as ``-m``: entries pickled by the service name mlops_serving.predlog's
# classes, which must be the ones the writer's code checks against.
_CHILD_MAIN = "import sys; from mlops_serving.predlog import main; sys.exit(main())"


class _Child:
    """One writer process and the flushes it has not answered yet (rows per flush)."""

    def __init__(self, sink: str, log_format: str) -> None:
        package_root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_MAIN, "--sink", sink, "--format", log_format],
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
        log_format: str = "jsonl",
    ) -> None:
        self.sink = sink
        self.log_format = log_format
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
        self._child = child = _Child(self.sink, self.log_format)
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

    def tick(self) -> None:
        """Let the child write a file that is due (only if it holds unanswered frames)."""
        self._signal(TICK)

    def commit(self) -> None:
        """Have the child write everything it holds now."""
        self._signal(COMMIT)

    def _signal(self, value: int) -> None:
        with self._lock:
            child = self._child
            if child is None or not child.in_flight or child.process.poll() is not None:
                return
        pipe = child.process.stdin
        assert pipe is not None
        with contextlib.suppress(OSError):  # a dead child: its answer reader counts the rows
            pipe.write(_FRAME_HEADER.pack(value))
            pipe.flush()

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


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    if len(data) != size:
        raise EOFError(f"prediction log pipe closed mid-frame ({len(data)} of {size} bytes)")
    return data


def serve_pipe(writer: SinkWriter, source: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: read flushes until the pipe closes and hand each to ``writer``; answer
    each flush (rows written, rows failed) as the writer settles it; at the end, write what the
    writer still holds."""

    def answer(settled: list[tuple[int, int]]) -> None:
        for written, failed in settled:
            answers.write(b"%d %d\n" % (written, failed))
        if settled:
            answers.flush()

    try:
        while (header := _read_exactly(source, _FRAME_HEADER.size)) is not None:
            (size,) = _FRAME_HEADER.unpack(header)
            if size == TICK:
                answer(writer.tick())
                continue
            if size == COMMIT:
                answer(writer.commit())
                continue
            body = _read_exactly(source, size)
            if body is None:
                raise EOFError("prediction log pipe closed after a frame header")
            entries = pickle.loads(body)  # noqa: S301 (our own parent, over a private pipe)
            answer(writer.write(entries))
    finally:  # the pipe closed (or broke): what the writer holds still goes to the sink
        settled = writer.commit()
        with contextlib.suppress(OSError):
            answer(settled)
