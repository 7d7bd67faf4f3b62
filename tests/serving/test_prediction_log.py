"""The prediction log: its sinks (a local directory, and S3 on an S3-compatible server on
loopback), its writers (the flush thread itself, and the child process the service uses) and
its formats (JSON lines, and Parquet rows carrying the same fields)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_serving.predlog import PredictionLog, RequestBody
from mlops_serving.predlog_parquet import ParquetSink, ParquetWriter
from mlops_serving.predlog_process import ProcessWriter
from processes import wait_for


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


def _lines(directory: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("date=*/predictions-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_local_sink_writes_one_line_per_prediction(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path))
    _fill(log)
    assert log.flush() == 3 and log.written_rows == 3
    lines = _lines(tmp_path)
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


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_s3_sink_puts_one_object_per_flush(s3_endpoint: str, writer: Any) -> None:
    import boto3

    bucket = f"predictions-{writer}"  # moto keeps one store per test process
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    log = PredictionLog(f"s3://{bucket}/churn/serving", writer=writer)
    _fill(log)
    log.flush(wait=30)
    _fill(log)
    log.flush(wait=30)
    log.close()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert len(keys) == 2 and all(k.startswith("churn/serving/date=") for k in keys)
    body = s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read().decode()
    assert len(body.splitlines()) == 3


def _body_entries(log: PredictionLog, records: list[dict[str, Any]]) -> None:
    """Entries as the service records them: the request body as it arrived."""
    single = orjson.dumps({"features": records[0], "entity_id": "E1"})
    log.record(request_id="one", entity_ids=("E1",), variant="stable", version="3",
               features=RequestBody(single, "features"), scores=(0.25,),
               timestamp=10.0)  # fmt: skip
    batch = orjson.dumps({"instances": records[1:], "entity_ids": ["E2", "E3"]})
    log.record(request_id="many", entity_ids=["E2", "E3"], variant="canary", version="4",
               features=RequestBody(batch, "instances"), scores=np.array([0.5, 0.75]),
               timestamp=11.0, out_of_range={1: ("tenure", "plan")})  # fmt: skip


RECORDS = [
    {"plan": "basic", "tenure": 1},
    {"plan": "pro", "tenure": 2.5},
    {"plan": "x", "tenure": 7},
]


def test_the_writer_process_decodes_request_bodies_into_the_same_lines(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), writer="process")
    _body_entries(log, RECORDS)
    assert log.flush(wait=30) == 3
    assert log.written_rows == 3
    lines = _lines(tmp_path)
    assert [(x["request_id"], x["row"], x["entity_id"], x["variant"], x["model_version"],
             x["score"], x["features"], x.get("out_of_range")) for x in lines] == [
        ("one", 0, "E1", "stable", "3", 0.25, RECORDS[0], None),
        ("many", 0, "E2", "canary", "4", 0.5, RECORDS[1], None),
        ("many", 1, "E3", "canary", "4", 0.75, RECORDS[2], ["tenure", "plan"]),
    ]  # fmt: skip
    # The same entries through the in-process writer give byte-identical lines.
    inline = tmp_path / "inline"
    same = PredictionLog(str(inline))
    _body_entries(same, RECORDS)
    same.flush()
    assert _lines(inline) == lines
    (path,) = tmp_path.glob("date=*/*.jsonl")
    assert path.name.endswith(f"-{log._process.pid}.jsonl")  # type: ignore[union-attr]
    log.close()


def test_closing_writes_everything_still_buffered(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), writer="process", flush_interval=60)
    log.start()
    _body_entries(log, RECORDS)
    log.close()  # no flush before: close hands the buffer over and waits for the child
    assert len(_lines(tmp_path)) == 3


def test_the_writer_ignores_terminal_and_group_signals_until_its_pipe_closes(
    tmp_path: Path,
) -> None:
    """Ctrl-C or a process-group SIGTERM reaches the child too; it must still write what the
    service hands it while shutting down."""
    log = PredictionLog(str(tmp_path), writer="process")
    _body_entries(log, RECORDS)
    log.flush(wait=30)
    pid = log._process.pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    _body_entries(log, RECORDS)
    log.close()
    assert len(_lines(tmp_path)) == 6 and log.written_rows == 6


_ENTRY = (1.0, "r", ("E",), "stable", "1", RequestBody(b'{"features": {"a": 1}}', "features"),
          (0.5,), None, None, None)  # fmt: skip


def _writer_with_a_child(
    tmp_path: Path, restart_backoff_s: float
) -> tuple[ProcessWriter, list[int], int]:
    """A process writer whose child has written one flush: (writer, rows dropped, child pid)."""
    dropped: list[int] = []
    writer = ProcessWriter(str(tmp_path), dropped.append, restart_backoff_s=restart_backoff_s)
    assert writer.write([_ENTRY]) == 1 and writer.wait(30)
    assert writer.pid is not None
    return writer, dropped, writer.pid


def test_rows_a_dead_writer_never_answered_are_counted_and_a_new_writer_takes_over(
    tmp_path: Path,
) -> None:
    writer, dropped, first = _writer_with_a_child(tmp_path, restart_backoff_s=0.0)
    os.kill(first, signal.SIGSTOP)
    assert writer.write([_ENTRY, _ENTRY]) == 2  # in the pipe, never to be answered
    os.kill(first, signal.SIGKILL)
    assert writer.wait(30)  # the answer reader saw the child go
    assert dropped == [2]
    assert writer.write([_ENTRY]) == 1 and writer.wait(30)
    assert writer.pid not in (None, first)
    writer.close()
    assert len(_lines(tmp_path)) == writer.written_rows == 2


def test_a_writer_that_keeps_dying_is_not_restarted_on_every_flush(tmp_path: Path) -> None:
    writer, dropped, first = _writer_with_a_child(tmp_path, restart_backoff_s=3600.0)
    os.kill(first, signal.SIGKILL)
    child = writer._child
    assert child is not None
    wait_for("the killed writer to be reaped", lambda: child.process.poll() is not None, 30)
    assert writer.write([_ENTRY, _ENTRY]) == 0  # within the backoff: dropped, counted
    assert dropped == [2] and writer.pid == first
    writer.close()


def test_a_body_that_cannot_be_decoded_is_counted_not_fatal(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = PredictionLog(str(tmp_path), writer="process", on_drop=dropped.append)
    log.record(request_id="bad", entity_ids=(), variant="stable", version="1",
               features=RequestBody(b"{not json", "instances"), scores=np.zeros(4),
               timestamp=1.0)  # fmt: skip
    _body_entries(log, RECORDS)
    log.flush(wait=30)
    log.close()
    assert dropped == [4] and len(_lines(tmp_path)) == 3


def test_flushes_go_to_the_writer_in_bounded_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each frame is pickled holding the interpreter lock: at most 64 requests or ~10,000 rows."""
    log = PredictionLog(str(tmp_path), writer="process")
    assert log._process is not None
    frames: list[int] = []
    send = log._process.write

    def counted(entries: list[Any]) -> int:
        frames.append(len(entries))
        return send(entries)

    monkeypatch.setattr(log._process, "write", counted)
    body = RequestBody(orjson.dumps({"instances": [{"a": i} for i in range(6_000)]}), "instances")
    for i in range(3):
        log.record(request_id=f"big{i}", entity_ids=(), variant="stable", version="1",
                   features=body, scores=np.zeros(6_000), timestamp=1.0)  # fmt: skip
    for i in range(100):
        log.record(request_id=f"small{i}", entity_ids=("E",), variant="stable", version="1",
                   features=RequestBody(b'{"features": {"a": 1}}', "features"), scores=(0.5,),
                   timestamp=1.0)  # fmt: skip
    assert log.flush(wait=60) == 18_100
    assert frames == [2, 64, 37]  # 12,000 rows; the third big one and 63 small; the rest
    log.close()
    assert len(_lines(tmp_path)) == log.written_rows == 18_100


# Parquet: the same fields as the lines, as typed columns; a file per window and writer.

DECLARED = (
    SimpleNamespace(name="plan", kind="category"),
    SimpleNamespace(name="tenure", kind="integer"),
)


def _parquet_rows(directory: Path) -> list[dict[str, Any]]:
    """Every row of every Parquet file, spelled as its JSON line would be (no key for a null
    class or out_of_range, the timestamp as ISO text)."""
    rows = []
    for path in sorted(directory.glob("date=*/predictions-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            row["timestamp"] = row["timestamp"].isoformat()
            rows.append({k: v for k, v in row.items() if v is not None or k == "entity_id"})
    return rows


def _order(row: dict[str, Any]) -> tuple[str, int]:
    return row["request_id"], row["row"]


def _mixed_entries(log: PredictionLog) -> None:
    """Bodies, a declared and an undeclared version, a multiclass answer and a shadow copy."""
    _body_entries(log, RECORDS)
    log.record(request_id="classes", entity_ids=(), variant="shadow", version="3",
               features=[{"plan": "basic", "tenure": 4}, {"plan": "pro", "tenure": 5}],
               scores=np.array([0.6, 0.7]), timestamp=12.5, classes=["gold", "silver"])  # fmt: skip


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_parquet_rows_carry_everything_the_json_lines_carry(tmp_path: Path, writer: Any) -> None:
    logs = {}
    for log_format in ("jsonl", "parquet"):
        log = PredictionLog(str(tmp_path / log_format), writer=writer, log_format=log_format)
        log.declare("3", DECLARED)
        _mixed_entries(log)
        assert log.flush(wait=30) == 5
        log.close()
        assert log.written_rows == 5
        logs[log_format] = log
    lines, rows = _lines(tmp_path / "jsonl"), _parquet_rows(tmp_path / "parquet")
    # A file per schema (declared version 3, version 4): the same rows, filed in another order.
    assert sorted(rows, key=_order) == sorted(lines, key=_order)
    assert [r["class"] for r in rows if "class" in r] == ["gold", "silver"]
    # Version 3 was declared: its file is typed by the spec; version 4's by its values.
    schemas = {
        pq.read_table(p).column("model_version")[0].as_py(): pq.read_schema(p).field("features")
        for p in (tmp_path / "parquet").glob("date=*/*.parquet")
    }
    assert str(schemas["3"].type) == "struct<plan: string, tenure: int64>"
    assert str(schemas["4"].type) == "struct<plan: string, tenure: double>"


def test_a_value_outside_its_declared_type_is_still_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = PredictionLog(str(tmp_path), log_format="parquet")
    log.declare("3", DECLARED)
    log.record(request_id="big", entity_ids=(), variant="stable", version="3",
               features=[{"plan": "a", "tenure": 1e300}, {"plan": 7, "tenure": 1}],
               scores=(0.1, 0.2), timestamp=1.0)  # fmt: skip
    assert log.flush() == 2
    (row, other) = _parquet_rows(tmp_path)
    assert row["features"] == {"plan": "a", "tenure": 1e300}  # the integer column as floats
    assert other["features"] == {"plan": "7", "tenure": 1.0}  # the category as JSON text
    assert "feature 'plan' holds values of mixed types" in caplog.text


def test_parquet_files_roll_by_rows_and_age_and_a_failed_put_counts_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _ENTRY
    writer = ParquetWriter(str(tmp_path), None, file_seconds=3600, file_rows=3)
    assert writer.write([entry]) == [] and writer.write([entry, entry]) == [(1, 0), (2, 0)]
    assert writer.write([entry]) == [] and writer.tick() == []  # not due: one row, just now
    (first,) = tmp_path.glob("date=*/*.parquet")
    assert pq.read_metadata(first).num_rows == 3
    assert not list(tmp_path.rglob("*.tmp"))  # written beside its name, then renamed
    aged = ParquetWriter(str(tmp_path), None, file_seconds=0.0)
    assert aged.tick() == [] and aged.write([entry]) == [] and aged.tick() == [(1, 0)]

    def refuse(self: Any, table: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ParquetSink, "put", refuse)
    bad = (1.0, "bad", (), "stable", "1", RequestBody(b"{not json", "instances"), (0.1, 0.2),
           None, None, None)  # fmt: skip
    assert writer.write([bad]) == []
    assert writer.commit() == [(0, 1), (0, 2)]  # the buffered row lost, the bad ones failed
    assert len(list(tmp_path.glob("date=*/*.parquet"))) == 2


def test_the_parquet_writer_process_answers_when_its_file_is_written(tmp_path: Path) -> None:
    log = PredictionLog(str(tmp_path), writer="process", log_format="parquet")
    _body_entries(log, RECORDS)
    assert log.flush() == 3  # handed over; the file is due in FILE_SECONDS
    assert log._process is not None and log._process.wait(0.5) is False
    assert log.written_rows == 0 and not list(tmp_path.rglob("*.parquet"))
    assert log.flush(wait=30) == 0 and log.written_rows == 3  # asked for: written now
    _body_entries(log, RECORDS)
    log.flush()
    log.close()  # the pipe closes: the child writes what it holds, then exits
    assert log.written_rows == 6 and len(_parquet_rows(tmp_path)) == 6
    assert len(list(tmp_path.glob("date=*/*.parquet"))) == 2  # a file per window


def test_s3_sink_puts_one_parquet_object_per_file(s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="predictions-parquet")
    log = PredictionLog("s3://predictions-parquet/churn", writer="process", log_format="parquet")
    log.declare("3", DECLARED)
    _fill(log)
    log.close()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="predictions-parquet")["Contents"])
    assert len(keys) == 2 and all(
        k.startswith("churn/date=") and k.endswith(".parquet") for k in keys
    )
    body = s3.get_object(Bucket="predictions-parquet", Key=keys[0])["Body"].read()
    assert pq.read_table(pa.BufferReader(body)).num_rows in (1, 2)
