"""The prediction log read back in both formats: the same requests, written by the service's own
writer as JSON lines and as Parquet, read as the same frames; what breaks the contract is named
in a Parquet file as in a JSON lines one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_wine

from mlops_serving import predlog_parquet
from mlops_serving.predlog import PredictionLog, RequestBody
from mlops_steps.common.predictions import (
    check_features,
    log_files,
    log_provenance,
    read_window,
)
from mlops_steps.common.window import EmptyWindow, FeatureKind, SchemaMismatch, Window

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
WINDOW = Window(NOW - dt.timedelta(hours=1), NOW)
WINE = load_wine(as_frame=True).frame
NUMBERS = ["alcohol", "malic_acid", "magnesium", "proline"]
KINDS = {
    **{name: FeatureKind(name, "float") for name in NUMBERS},
    "cultivar": FeatureKind("cultivar", "category"),
    "strong": FeatureKind("strong", "boolean", nullable=True),
    "visits": FeatureKind("visits", "integer"),
}


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Wine rows as request bodies spell them (one feature left null, one integer as 3.0)."""
    out = []
    for index, row in rows.iterrows():
        record: dict[str, Any] = {name: float(row[name]) for name in NUMBERS}
        record["cultivar"] = f"c{int(row['target'])}"
        record["strong"] = None if index % 5 == 0 else bool(row["alcohol"] > 13)
        record["visits"] = 3.0 if index % 4 == 0 else int(row["magnesium"]) % 7
        out.append(record)
    return out


def _serve(log: PredictionLog) -> None:
    """Requests as the service records them: singles and batches, a canary, a shadow copy, and
    rows before and after the window."""
    records = _records(WINE)
    inside = (NOW - dt.timedelta(minutes=30)).timestamp()
    for i in range(40):  # one-row requests, bodies as they arrived
        body = RequestBody(orjson.dumps({"features": records[i]}), "features")
        log.record(request_id=f"one-{i}", entity_ids=(f"E{i}",), variant="stable", version="7",
                   features=body, scores=(i / 40,), timestamp=inside + i,
                   out_of_range={0: ("proline",)} if i % 9 == 0 else None)  # fmt: skip
    for first in range(40, 178, 23):  # batches without entity ids
        part = records[first : first + 23]
        log.record(request_id=f"batch-{first}", entity_ids=(), variant="stable", version="7",
                   features=part, scores=np.linspace(0, 1, len(part)),
                   timestamp=inside + first)  # fmt: skip
    log.record(request_id="canary", entity_ids=("C1", "C2"), variant="canary", version="8",
               features=records[:2], scores=(0.1, 0.2), timestamp=inside)  # fmt: skip
    log.record(request_id="one-3", entity_ids=("E3",), variant="shadow", version="8",
               features=records[3:4], scores=(0.9,), timestamp=inside + 3)  # fmt: skip
    for when in (WINDOW.start - dt.timedelta(seconds=1), WINDOW.end):
        log.record(request_id=f"out-{when:%H%M%S}", entity_ids=(), variant="stable",
                   version="7", features=records[:3], scores=(0.5, 0.5, 0.5),
                   timestamp=when.timestamp())  # fmt: skip
    log.flush()


def _log(directory: Path, log_format: str, declare: bool = True) -> str:
    log = PredictionLog(str(directory), log_format=log_format)
    if declare:
        for version in ("7", "8"):
            log.declare(version, [SimpleNamespace(name=n, kind=k.kind) for n, k in KINDS.items()])
    _serve(log)
    log.close()
    return str(directory)


@pytest.mark.parametrize("declare", [True, False], ids=["spec-typed", "value-typed"])
def test_parquet_rows_read_back_equal_to_the_json_lines_rows(
    tmp_path: Path, declare: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predlog_parquet, "ROW_GROUP_ROWS", 50)  # several groups in the window
    jsonl = _log(tmp_path / "jsonl", "jsonl")
    parquet = _log(tmp_path / "parquet", "parquet", declare=declare)
    assert {f.format for f in log_files(parquet, WINDOW)} == {"parquet"}
    (path,) = [Path(f.name) for f in log_files(parquet, WINDOW)]
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    lines, rows = read_window(jsonl, WINDOW, KINDS), read_window(parquet, WINDOW, KINDS)
    assert len(rows.meta) == 178 + 2  # the window's stable and canary rows; no shadow
    pd.testing.assert_frame_equal(rows.meta, lines.meta)
    pd.testing.assert_frame_equal(rows.features, lines.features)
    assert rows.seen_features == lines.seen_features == set(KINDS)
    assert rows.by_version == lines.by_version == {("stable", "7"): 178, ("canary", "8"): 2}
    checked = [
        check_features(w.features, KINDS, source="x", max_null_share=0.3) for w in (lines, rows)
    ]
    pd.testing.assert_frame_equal(*checked)
    assert checked[0]["strong"].isna().sum() == 36 + 1  # every fifth row as sent (and a canary)
    # One version only, and only some fields: the same rows, the same values.
    lean = read_window(parquet, WINDOW, KINDS, meta=("score",), only_version="8", categorical=True)
    assert list(lean.meta.columns) == ["score"] and lean.meta["score"].tolist() == [0.1, 0.2]
    assert lean.by_version == rows.by_version
    canary = lines.features[lines.meta["model_version"] == "8"].reset_index(drop=True)
    assert lean.features["cultivar"].dtype == "category"
    pd.testing.assert_frame_equal(lean.features.astype({"cultivar": object}), canary)


def test_parquet_files_are_typed_by_the_spec_and_their_provenance_counts_rows(
    tmp_path: Path,
) -> None:
    parquet = _log(tmp_path / "parquet", "parquet")
    (path,) = [Path(f.name) for f in log_files(parquet, WINDOW)]
    features = pq.read_schema(path).field("features").type
    assert {features.field(i).name: str(features.field(i).type) for i in range(7)} == {
        **dict.fromkeys(NUMBERS, "double"),
        "cultivar": "string",
        "strong": "bool",
        "visits": "int64",
    }
    (provenance,) = log_provenance(parquet, WINDOW)
    assert provenance["format"] == "parquet" and provenance["rows"] == 178 + 2 + 1 + 6
    jsonl = _log(tmp_path / "jsonl", "jsonl")
    (lines,) = log_provenance(jsonl, WINDOW)
    assert lines["format"] == "jsonl" and lines["rows"] == provenance["rows"]


def _parquet(directory: Path, table: pa.Table) -> Path:
    day = directory / f"date={NOW:%Y-%m-%d}"
    day.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, day / "predictions-foreign.parquet")
    return directory


def _row(**features: Any) -> dict[str, Any]:
    stamp = NOW - dt.timedelta(minutes=1)
    return {"request_id": "r", "timestamp": stamp, "variant": "stable", "model_version": "7",
            "row": 0, "entity_id": None, "score": 0.5, "features": features}  # fmt: skip


def test_a_parquet_file_that_breaks_the_contract_is_named(tmp_path: Path) -> None:
    good = {**dict.fromkeys(NUMBERS, 1.0), "cultivar": "c1", "strong": True, "visits": 2}
    cases = {
        "extra": ({**good, "colour": 1.0}, "not in the champion's feature spec"),
        "mistyped": ({**good, "alcohol": "high"}, "feature 'alcohol' holds string"),
        "not boolean": ({**good, "strong": 2}, "feature 'strong' holds int64 other than 0 and 1"),
    }
    for name, (features, message) in cases.items():
        table = pa.Table.from_pylist([_row(**features)])
        directory = _parquet(tmp_path / name.replace(" ", "-"), table)
        with pytest.raises(SchemaMismatch, match=message):
            read_window(str(directory), WINDOW, KINDS)
    foreign = tmp_path / "foreign" / f"date={NOW:%Y-%m-%d}"
    foreign.mkdir(parents=True)
    (foreign / "predictions-x.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaMismatch, match="is not a readable Parquet file"):
        read_window(str(tmp_path / "foreign"), WINDOW, KINDS)


def test_files_being_written_and_row_groups_outside_the_window_are_not_read(
    tmp_path: Path,
) -> None:
    good = {**dict.fromkeys(NUMBERS, 1.0), "cultivar": "c1", "strong": None, "visits": 2}
    early = _row(**good) | {"timestamp": WINDOW.start - dt.timedelta(hours=2), "score": 0.1}
    table = pa.Table.from_pylist([early, _row(**good)])
    directory = tmp_path / "log"
    day = directory / f"date={NOW:%Y-%m-%d}"
    day.mkdir(parents=True)
    pq.write_table(table, day / "predictions-a.parquet", row_group_size=1)
    (day / ".predictions-b.parquet.tmp").write_bytes(b"half a file")
    served = read_window(str(directory), WINDOW, KINDS)
    assert served.meta["score"].tolist() == [0.5] and served.files_read == 1
    later = Window(NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2))
    with pytest.raises(EmptyWindow, match="no predictions logged"):
        read_window(str(directory), later, KINDS)
