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
from mlops_steps.common.window import Window
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.policies import SourceRequest
from mlops_steps.core.sections import for_model
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
    else:
        source = resolve_source(source, contract)
        frame, left_out = _contract_columns(read_source(source), contract)
        frame = with_row_ids(frame, contract)
        fields = {
            "source": source.uri,
            "source_params": {"rows": source.rows, "seed": source.seed, "drift": source.drift}
            if source.is_synthetic
            else {},
            "columns_left_out": left_out,
        }
    data_sha256 = frame_sha256(frame)

    if partition.manifest.is_file() and partition.data.is_file():
        previous = read_json(partition.manifest, produced_by="ingest")
        if (
            previous.get("data_sha256") == data_sha256
            and sha256_file(partition.data) == previous.get("file_sha256")
            and previous.get("served") == json.loads(json.dumps(fields.get("served")))
        ):
            return {**previous, "unchanged": True}

    # Manifest last: it is the commit marker that later steps check the data file against.
    # The checksum of the bytes this attempt wrote: an overlapping attempt may replace the file
    # before the manifest lands, and then the data no longer matches it (load fails, named).
    file_sha256 = write_parquet(partition.data, frame)
    manifest: dict[str, Any] = {
        "partition": partition.key,
        "path": str(partition.data),
        **fields,
        "data_sha256": data_sha256,
        "file_sha256": file_sha256,
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "summary": _summary(frame, contract),
    }
    write_json(partition.manifest, manifest)
    return {**manifest, "unchanged": False}
