"""Where a logical run's files live, and atomic, checksummed reads and writes of them.

One directory per partition (one per logical date) holds the ingested data, its manifest, the
validation results and Data Docs, and each later step's JSON result. Re-running a logical date
rewrites the same directory, and every file is written to a temporary name and renamed into place,
so a crash never leaves a half-written file that a later step would trust. Temporary names carry
the writer's host and pid (two overlapping attempts of a task, even in two pods sharing the
volume, never write the same temporary file), and each file is fsynced before its rename and its
directory after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_steps.common import dataplane
from mlops_steps.core.errors import StepError

_PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_partition_key(key: str) -> str:
    if not _PARTITION_KEY.fullmatch(key):
        raise StepError(
            f"{key!r} is not a valid partition key",
            subject="--partition",
            fix="use letters, digits, '.', '_' or '-' (e.g. 20261123T000000)",
        )
    return key


@dataclass(frozen=True)
class Partition:
    """The files of one logical run of the training pipeline."""

    root: Path

    @classmethod
    def of(cls, dataset_root: Path, key: str) -> Partition:
        """The partition ``key``; on an object-store data root, fetched into the step's working
        copy first when the store has it committed (common/dataplane.py)."""
        partition = cls(dataset_root / f"partition={check_partition_key(key)}")
        # Data Docs are for people (the reports route serves them); no step reads them back.
        docs = partition.data_docs_dir.relative_to(partition.root).as_posix() + "/"
        dataplane.fetch_committed(partition.root, skip=(docs,))
        return partition

    @property
    def key(self) -> str:
        return self.root.name.removeprefix("partition=")

    @property
    def data(self) -> Path:
        return self.root / "data.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def data_docs_dir(self) -> Path:
        return self.validation_dir / "data_docs"

    def result(self, step: str) -> Path:
        """Where a step's JSON result for this partition is kept."""
        return self.root / "results" / f"{step}.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """A content hash of a frame: same columns, dtypes and values give the same hash,
    whatever file format or library version wrote it."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def attempt_tag() -> str:
    """Who writes: host (the pod) and pid, so temporary files of overlapping attempts differ and
    a leftover one names the attempt that left it."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (or a file: opening read-only and fsyncing works for both)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> str:
    """Write ``path`` through ``write(tmp)`` into an attempt-scoped temporary file in the same
    directory, fsync it, hash it and rename it into place. Returns the sha256 of the bytes that
    were renamed, so a caller records the checksum of what *it* wrote even when another attempt
    replaces the file a moment later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{attempt_tag()}.", suffix=".tmp"
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return digest


def atomic_write_bytes(path: Path, payload: bytes) -> str:
    """Replace ``path`` with ``payload`` atomically; returns the payload's sha256."""
    return _atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def write_json(path: Path, payload: dict[str, Any]) -> str:
    """Replace ``path`` with ``payload`` as JSON atomically; returns the file's sha256."""
    return atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, *, produced_by: str) -> dict[str, Any]:
    """Read a step result; a missing one names the step that should have written it."""
    if not path.is_file():
        raise StepError(
            "not found",
            subject=str(path),
            fix=f"run the '{produced_by}' step for this partition first",
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StepError(
            f"is not valid JSON ({exc})",
            subject=str(path),
            fix=f"re-run the '{produced_by}' step for this partition",
        ) from None
    if not isinstance(data, dict):
        raise StepError("does not hold a JSON object", subject=str(path))
    return data


def write_parquet(path: Path, frame: pd.DataFrame) -> str:
    """Replace ``path`` with ``frame`` atomically; returns the sha256 of the file this call
    wrote (record that, not a re-read of ``path``: another attempt may have replaced it)."""
    return _atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, compression="zstd"))


def checked_manifest(partition: Partition) -> dict[str, Any]:
    """A partition's manifest, once its data file matches the checksum the manifest recorded."""
    manifest = read_json(partition.manifest, produced_by="ingest")
    if not partition.data.is_file():
        raise StepError("data file missing", subject=str(partition.data), fix="re-run 'ingest'")
    actual = sha256_file(partition.data)
    if actual != manifest.get("file_sha256"):
        raise StepError(
            f"checksum mismatch: manifest says {manifest.get('file_sha256')}, file is {actual}",
            subject=str(partition.data),
            fix="the file changed after ingestion; re-run 'ingest' for this partition",
        )
    return manifest


def load_partition_frame(partition: Partition) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a partition's data after checking it against the checksum its manifest recorded."""
    manifest = checked_manifest(partition)
    with pd.option_context("mode.string_storage", "pyarrow"):  # as columnar.to_pandas reads
        return pd.read_parquet(partition.data), manifest
