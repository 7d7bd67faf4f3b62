"""The prediction log sinks: a local directory, and S3 (an S3-compatible server on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlops_serving.predlog import PredictionLog


def _fill(log: PredictionLog) -> None:
    log.record(
        request_id="r1",
        entity_ids=("E1",),
        variant="stable",
        version="3",
        features=({"a": 1},),
        scores=(0.25,),
        timestamp=0.0,
    )
    log.record(
        request_id="r2",
        entity_ids=(),
        variant="canary",
        version="4",
        features=[{"a": 2}, {"a": 3}],
        scores=np.array([0.5, 0.75]),
        timestamp=1.0,
    )


def test_local_sink_writes_one_line_per_prediction(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path))
    _fill(log)
    assert log.flush() == 3
    (path,) = tmp_path.glob("date=*/predictions-*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [
        (x["request_id"], x["row"], x["entity_id"], x["variant"], x["score"]) for x in lines
    ] == [
        ("r1", 0, "E1", "stable", 0.25),
        ("r2", 0, None, "canary", 0.5),
        ("r2", 1, None, "canary", 0.75),
    ]
    assert lines[2]["features"] == {"a": 3} and lines[0]["timestamp"].startswith("1970-01-01")


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    dropped: list[float] = []
    log = PredictionLog(str(tmp_path), max_buffered=1, on_drop=dropped.append)
    _fill(log)
    assert dropped == [2]
    assert log.flush() == 1


def test_s3_sink_puts_one_object_per_flush(s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="predictions")
    log = PredictionLog("s3://predictions/churn/serving")
    _fill(log)
    log.flush()
    _fill(log)
    log.flush()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="predictions")["Contents"])
    assert len(keys) == 2 and all(k.startswith("churn/serving/date=") for k in keys)
    body = s3.get_object(Bucket="predictions", Key=keys[0])["Body"].read().decode()
    assert len(body.splitlines()) == 3
