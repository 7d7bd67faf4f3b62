"""ingest: read the source, write the partition for this logical date with its checksums.

The partition holds the contract's columns (others in the source are left out and listed in the
manifest; missing ones are left for validate to name). A contract without an id column gets a
``_row_id`` derived from each row's content, which splits and joins use.

A run may train on served traffic instead (``training_data``, see :mod:`.served`): the window's
labelled predictions mixed with the champion's training rows, provenance under ``served``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pandas as pd

from mlops_steps.common.columnar import ChunkedPartitionWriter, chunks_of, lean_frame
from mlops_steps.common.metrics import id_column_of, with_row_ids
from mlops_steps.common.storage import Partition, read_json, sha256_file, write_json
from mlops_steps.common.window import Window
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.policies import SourceRequest
from mlops_steps.core.sections import for_model
from mlops_steps.core.settings import Settings
from mlops_steps.training.sources import read_source, read_source_chunks, resolve_source


class _Summary:
    """The manifest's summary of the rows, accumulated chunk by chunk: row and null counts, the
    column types, and the label's rate (binary), mean (regression) or class shares."""

    def __init__(self, contract: ModelContract) -> None:
        self.contract = contract
        self.rows = 0
        self.columns: dict[str, str] = {}
        self.nulls: dict[str, int] = {}
        self.label_sum, self.label_count = 0.0, 0
        self.label_counts: dict[str, int] = {}
        self.label_numeric: bool | None = None

    def add(self, frame: pd.DataFrame) -> None:
        if not self.columns:
            self.columns = {column: str(dtype) for column, dtype in frame.dtypes.items()}
        self.rows += len(frame)
        for column, count in frame.isna().sum().items():
            self.nulls[str(column)] = self.nulls.get(str(column), 0) + int(count)
        label = self.contract.label
        if label not in frame or not len(frame):
            return
        values = frame[label]
        numeric = pd.api.types.is_numeric_dtype(values)
        self.label_numeric = numeric if self.label_numeric is None else self.label_numeric
        if self.contract.task in ("binary", "regression") and numeric:
            self.label_sum += float(values.sum())
            self.label_count += int(values.notna().sum())
        else:
            for key, count in values.astype(str).value_counts().items():
                self.label_counts[str(key)] = self.label_counts.get(str(key), 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "null_counts": {c: n for c, n in self.nulls.items() if n},
        }
        if not self.rows or self.label_numeric is None:
            return summary
        task = self.contract.task
        if task in ("binary", "regression") and self.label_numeric:
            mean = self.label_sum / self.label_count if self.label_count else float("nan")
            summary["label_rate" if task == "binary" else "label_mean"] = round(mean, 6)
        else:
            summary["label_shares"] = {
                key: round(count / self.rows, 6) for key, count in sorted(self.label_counts.items())
            }
        return summary


def _contract_columns(frame: pd.DataFrame, contract: ModelContract) -> tuple[pd.DataFrame, list]:
    """The contract's columns in its order when the source has them all (extra columns are
    left out); otherwise the frame as read, so validate names what is missing."""
    wanted = list(contract.all_columns)
    extra = [c for c in frame.columns if c not in wanted]
    if any(c not in frame.columns for c in wanted):
        return frame, []
    return frame.loc[:, wanted], extra


def _served_partition(
    settings: Settings,
    contract: ModelContract,
    request: ServedDataRequest,
    window: Window | None,
    as_of: dt.datetime,
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The served source's frame and manifest fields, or None when the run reads the source."""
    from mlops_steps.training.served import build_served_frame, champion_reference, plan_served

    plan = plan_served(request, window, as_of)
    if plan is None:
        return None
    frame, provenance = build_served_frame(
        contract,
        plan,
        request,
        prediction_log=for_model(settings.prediction_log, settings.model_name),
        labels_location=settings.labels_location,
        reference=champion_reference(settings),
    )
    fields = {
        "source": f"served://{contract.name}",
        "source_params": {},
        "columns_left_out": [],
        "served": provenance,
    }
    return frame, fields


def run_ingest(
    settings: Settings,
    partition_key: str,
    source: SourceRequest,
    served: ServedDataRequest | None = None,
    *,
    served_window: Window | None = None,
    as_of: dt.datetime | None = None,
) -> dict[str, Any]:
    """Write the partition's ``data.parquet`` and ``manifest.json``; unchanged data (and, for
    served traffic, unchanged provenance) stays as is. ``served``: whether and how to train on
    served traffic (default: ``auto``, which reads the source unless a window is given)."""
    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    from_served = _served_partition(
        settings,
        contract,
        served or ServedDataRequest(),
        served_window,
        as_of or dt.datetime.now(dt.UTC),
    )
    if from_served is not None:
        frame, fields = from_served
        chunks = chunks_of(lean_frame(frame, contract, id_column_of(contract)))
    else:
        source = resolve_source(source, contract)
        chunks, left_out = _source_chunks(source, contract)
        fields = {
            "source": source.uri,
            "source_params": {"rows": source.rows, "seed": source.seed, "drift": source.drift}
            if source.is_synthetic
            else {},
            "columns_left_out": left_out,
        }

    # The rows go to an attempt-scoped temporary file, hashed as they are written; unchanged
    # data leaves the committed file (and the manifest) as they were.
    writer = ChunkedPartitionWriter(partition.data)
    summary = _Summary(contract)
    try:
        for chunk in chunks:
            writer.write(chunk)
            summary.add(chunk)
        data_sha256 = writer.data_sha256
        if partition.manifest.is_file() and partition.data.is_file():
            previous = read_json(partition.manifest, produced_by="ingest")
            if (
                previous.get("data_sha256") == data_sha256
                and sha256_file(partition.data) == previous.get("file_sha256")
                and previous.get("served") == json.loads(json.dumps(fields.get("served")))
            ):
                writer.discard()
                return {**previous, "unchanged": True}
        # Manifest last: it is the commit marker that later steps check the data file against.
        # The checksum of the bytes this attempt wrote: an overlapping attempt may replace the
        # file before the manifest lands, and then the data no longer matches it (load fails).
        file_sha256 = writer.commit()
    except BaseException:
        writer.discard()
        raise
    manifest: dict[str, Any] = {
        "partition": partition.key,
        "path": str(partition.data),
        **fields,
        "data_sha256": data_sha256,
        "file_sha256": file_sha256,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "summary": summary.as_dict(),
    }
    write_json(partition.manifest, manifest)
    return {**manifest, "unchanged": False}


def _source_chunks(
    source: SourceRequest, contract: ModelContract
) -> tuple[Iterator[pd.DataFrame], list[str]]:
    """The source's rows as chunks of the contract's columns, and the columns left out. The
    synthetic generator is read a chunk at a time; a file is read whole (its rows may need ids
    derived from the whole table), then held lean and written in chunks."""
    if source.is_synthetic:
        return read_source_chunks(source), []
    frame, left_out = _contract_columns(read_source(source), contract)
    frame = lean_frame(with_row_ids(frame, contract), contract, id_column_of(contract))
    return chunks_of(frame), left_out
