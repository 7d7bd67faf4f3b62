"""ingest: read the source, write the partition for this logical date with its checksums.

The partition holds the contract's columns (others in the source are left out and listed in the
manifest; missing ones are left for validate to name). A contract without an id column gets a
``_row_id`` derived from each row's content, which splits and joins use.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from mlops_steps.common.metrics import with_row_ids
from mlops_steps.common.storage import (
    Partition,
    frame_sha256,
    read_json,
    sha256_file,
    write_json,
    write_parquet,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.policies import SourceRequest
from mlops_steps.core.settings import Settings
from mlops_steps.training.sources import read_source, resolve_source


def _summary(frame: pd.DataFrame, contract: ModelContract) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rows": len(frame),
        "columns": {column: str(dtype) for column, dtype in frame.dtypes.items()},
        "null_counts": {c: int(n) for c, n in frame.isna().sum().items() if n},
    }
    label = contract.label
    if label in frame and len(frame):
        values = frame[label]
        if contract.task == "regression" and pd.api.types.is_numeric_dtype(values):
            summary["label_mean"] = round(float(values.mean()), 6)
        elif contract.task == "binary" and pd.api.types.is_numeric_dtype(values):
            summary["label_rate"] = round(float(values.mean()), 6)
        else:
            shares = values.astype(str).value_counts(normalize=True).sort_index()
            summary["label_shares"] = {k: round(float(v), 6) for k, v in shares.items()}
    return summary


def _contract_columns(frame: pd.DataFrame, contract: ModelContract) -> tuple[pd.DataFrame, list]:
    """The contract's columns in its order when the source has them all (extra columns are
    left out); otherwise the frame as read, so validate names what is missing."""
    wanted = list(contract.all_columns)
    extra = [c for c in frame.columns if c not in wanted]
    if any(c not in frame.columns for c in wanted):
        return frame, []
    return frame.loc[:, wanted], extra


def run_ingest(settings: Settings, partition_key: str, source: SourceRequest) -> dict[str, Any]:
    """Write the partition's ``data.parquet`` and ``manifest.json``; unchanged data stays as is."""
    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    source = resolve_source(source, contract)
    frame, left_out = _contract_columns(read_source(source), contract)
    frame = with_row_ids(frame, contract)
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
        "columns_left_out": left_out,
        "data_sha256": data_sha256,
        "file_sha256": file_sha256,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "summary": _summary(frame, contract),
    }
    write_json(partition.manifest, manifest)
    return {**manifest, "unchanged": False}
