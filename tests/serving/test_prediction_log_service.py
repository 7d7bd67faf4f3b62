"""The prediction log of a real service process in both formats: the same requests (single
rows with entity ids, a batch, values outside the training range, shadow copies) logged as
JSON lines by one service and as Parquet by another carry the same rows, and the steps' reader
reads them back as the same frames."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from tests.service_process import Service, stop_process

from mlops_steps.common.columnar import plain_values
from mlops_steps.common.predictions import read_window
from mlops_steps.common.window import FeatureKind, Window
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

pytestmark = pytest.mark.serving
CHURN = load_contract("churn")
KINDS = {f.name: FeatureKind(f.name, f.kind, f.nullable) for f in CHURN.features}


def _records(rows: int) -> list[dict[str, Any]]:
    frame = plain_values(generate_churn(rows, seed=23).loc[:, list(CHURN.feature_names)])
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    records[3]["avg_monthly_gb"] = 1999.0  # within its limits, far outside the training range
    return records


def _serve(service: Service, records: list[dict[str, Any]]) -> None:
    with service.admin() as admin, service.client() as http:
        shadow = {"ref": "challenger", "weight": 1.0, "shadow": True}
        assert admin.post("/admin/canary", json=shadow).json()["shadow_share"] == 1.0
        for i, record in enumerate(records[:12]):
            body = {"features": record, "entity_id": f"E{i}", "request_id": f"one-{i}"}
            assert http.post("/predict", json=body).status_code == 200
        batch = {"instances": records[12:], "request_id": "batch"}
        assert http.post("/predict/batch", json=batch).status_code == 200


def _rows(log_dir: Path) -> list[dict[str, Any]]:
    """Every row, keyed as the JSON line spells it (a null class / out_of_range is no key)."""
    rows = [json.loads(line) for p in log_dir.glob("date=*/*.jsonl")
            for line in p.read_text().splitlines()]  # fmt: skip
    for path in log_dir.glob("date=*/*.parquet"):
        for row in pq.read_table(path).to_pylist():
            row["timestamp"] = row["timestamp"].isoformat()
            rows.append({k: v for k, v in row.items() if v is not None or k == "entity_id"})
    return sorted(rows, key=lambda r: (r["request_id"], r["row"], r["variant"]))


def test_a_service_logs_the_same_rows_as_json_lines_and_as_parquet(
    registry: str, start_service: Callable[..., Service]
) -> None:
    records = _records(30)
    started = dt.datetime.now(dt.UTC)
    logs = {}
    for log_format in ("jsonl", "parquet"):
        service = start_service(registry, SERVING_PREDICTION_LOG_FORMAT=log_format)
        _serve(service, records)
        stop_process(service.process)  # shutdown: the writer writes what it holds, then exits
        logs[log_format] = service.log_dir
    parquet_files = list(logs["parquet"].glob("date=*/*.parquet"))
    assert parquet_files and not list(logs["parquet"].rglob("*.jsonl"))
    lines, rows = _rows(logs["jsonl"]), _rows(logs["parquet"])
    assert len(lines) == 2 * 30  # every row served, and its shadow copy
    for row in (*lines, *rows):  # the services answered a few seconds apart
        assert dt.datetime.fromisoformat(row.pop("timestamp")) >= started
    assert rows == lines
    assert {r["variant"] for r in rows} == {"stable", "shadow"}
    flagged = [(r["variant"], r["out_of_range"]) for r in rows if "out_of_range" in r]
    assert flagged == [("stable", ["avg_monthly_gb"])]  # shadow copies are not flagged
    # The feature spec typed the Parquet columns (the served version declared itself).
    features = pq.read_schema(parquet_files[0]).field("features").type
    kinds = {
        features.field(i).name: str(features.field(i).type) for i in range(features.num_fields)
    }
    assert kinds["tenure_months"] == "int64" and kinds["monthly_charges"] == "double"
    assert kinds["contract_type"] == "string"

    window = Window(started, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
    read = {f: read_window(str(d), window, KINDS) for f, d in logs.items()}
    for part in ("meta", "features"):
        frames = [getattr(read[f], part).drop(columns="timestamp", errors="ignore")
                  .sort_values(["request_id", "row"] if part == "meta" else list(KINDS))
                  .reset_index(drop=True) for f in logs]  # fmt: skip
        assert frames[0].equals(frames[1]), part
    assert read["jsonl"].by_version == read["parquet"].by_version == {("stable", "1"): 30}
