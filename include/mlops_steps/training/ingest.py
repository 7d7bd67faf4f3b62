"""ingest: read the source, write the partition for this logical date with its checksums."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from mlops_steps.common.storage import (
    Partition,
    frame_sha256,
    read_json,
    sha256_file,
    write_json,
    write_parquet,
)
from mlops_steps.contract.schema import LABEL_COLUMN
from mlops_steps.core.policies import SourceRequest
from mlops_steps.core.settings import Settings
from mlops_steps.training.sources import read_source


def _summary(frame: pd.DataFrame) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rows": len(frame),
        "columns": {column: str(dtype) for column, dtype in frame.dtypes.items()},
        "null_counts": {c: int(n) for c, n in frame.isna().sum().items() if n},
    }
    if LABEL_COLUMN in frame and pd.api.types.is_numeric_dtype(frame[LABEL_COLUMN]):
        summary["label_rate"] = round(float(frame[LABEL_COLUMN].mean()), 6) if len(frame) else None
    return summary


def run_ingest(settings: Settings, partition_key: str, source: SourceRequest) -> dict[str, Any]:
    """Write the partition's ``data.parquet`` and ``manifest.json``; unchanged data stays as is."""
    partition = Partition.of(settings.dataset_root, partition_key)
    frame = read_source(source)
    data_sha256 = frame_sha256(frame)

    if partition.manifest.is_file() and partition.data.is_file():
        previous = read_json(partition.manifest, produced_by="ingest")
        if previous.get("data_sha256") == data_sha256 and sha256_file(
            partition.data
        ) == previous.get("file_sha256"):
            return {**previous, "unchanged": True}

    # Manifest last: it is the commit marker that later steps check the data file against.
    # The checksum of the bytes this attempt wrote: an overlapping attempt may replace the file
    # before the manifest lands, and then the data no longer matches it (load fails, named).
    file_sha256 = write_parquet(partition.data, frame)
    manifest: dict[str, Any] = {
        "partition": partition.key,
        "path": str(partition.data),
        "source": source.uri,
        "source_params": {"rows": source.rows, "seed": source.seed, "drift": source.drift}
        if source.is_synthetic
        else {},
        "data_sha256": data_sha256,
        "file_sha256": file_sha256,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "summary": _summary(frame),
    }
    write_json(partition.manifest, manifest)
    return {**manifest, "unchanged": False}
