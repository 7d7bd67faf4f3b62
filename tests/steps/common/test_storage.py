"""Partition and result files are replaced whole: concurrent writers (real processes) never let a
reader see a torn file, and temporary files are scoped to the attempt that writes them."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from pathlib import Path
from typing import Any

from mlops_steps.common.storage import sha256_file, write_json

WRITERS, WRITES = 4, 60


def _writer(path: str, writer: int, start: Any) -> None:
    start.wait()
    for n in range(WRITES):
        # ~200 KB: far more than one write() or one page, so a non-atomic write would tear.
        write_json(Path(path), {"writer": writer, "n": n, "pad": [writer] * 50_000})


def _reader(path: str, start: Any, done: Any, seen: Any) -> None:
    start.wait()
    torn = reads = 0
    while not done.is_set():
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            continue
        except json.JSONDecodeError:
            torn += 1
            continue
        reads += 1
        if payload["pad"] != [payload["writer"]] * 50_000:
            torn += 1
    seen.put((reads, torn))


def test_concurrent_writers_never_expose_a_torn_file(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    path = tmp_path / "results" / "train.json"
    start, done, seen = ctx.Barrier(WRITERS + 1), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(path), start, done, seen))
    writers = [ctx.Process(target=_writer, args=(str(path), w, start)) for w in range(WRITERS)]
    for process in [reader, *writers]:
        process.start()
    for process in writers:
        process.join(timeout=300)
        assert process.exitcode == 0
    done.set()
    reads, torn = seen.get(timeout=60)
    reader.join(timeout=60)
    assert torn == 0 and reads > 0
    final = json.loads(path.read_text())
    assert final["n"] == WRITES - 1 and final["writer"] in range(WRITERS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.json"]  # no temporary left


def test_temporary_files_name_the_attempt_and_the_checksum_is_of_the_bytes_written(
    tmp_path: Path, monkeypatch: Any
) -> None:
    path = tmp_path / "manifest.json"
    temporaries: list[str] = []
    real_replace = Path.replace

    def spy(self: Path, target: Any) -> Path:
        temporaries.append(self.name)
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    digest = write_json(path, {"a": 1})
    assert digest == sha256_file(path)
    (name,) = temporaries
    assert name.startswith(f".manifest.json.{socket.gethostname()[:40]}-{os.getpid()}.")
    assert name.endswith(".tmp")
