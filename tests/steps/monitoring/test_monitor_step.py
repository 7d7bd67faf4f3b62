"""``mlops-step monitor`` against a real MLflow server, real Evidently and a champion trained by
the real steps; traffic is the synthetic generator's, scored by the champion itself."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_steps.cli import main as cli
from mlops_steps.common.predictions import read_window
from mlops_steps.common.window import (
    AllNullFeature,
    EmptyWindow,
    FeatureKind,
    NullFeatureValues,
    SchemaMismatch,
    Window,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core import results
from tests.fixtures.champion import Champion
from tests.steps.monitoring.helpers import monitor_args, score, window, write_log

CHURN = load_contract("churn")
ID_COLUMN, LABEL_COLUMN = str(CHURN.id_column), CHURN.label
KINDS = {f.name: FeatureKind(f.name, f.kind) for f in CHURN.features}
SEEDS = 10


def _result(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(results.RESULT_MARKER), last
    return json.loads(last[len(results.RESULT_MARKER) :])


@pytest.mark.parametrize("log_format", ["jsonl", "parquet"])
def test_injected_drift_is_detected_reported_and_logged(
    monitoring_env: Champion,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    log_format: str,
) -> None:
    caplog.set_level(logging.INFO, logger="mlops_steps")
    start, end = window(1 if log_format == "jsonl" else 4)
    log_dir = tmp_path / "log"
    drifted = generate_churn(3000, seed=11, drift=0.5)
    write_log(log_dir, drifted, score(monitoring_env.model, drifted), start=start, batch=5,
              log_format=log_format)  # fmt: skip
    # Same window, another version (a canary): never part of the champion's judgement.
    canary = generate_churn(300, seed=12)
    write_log(log_dir, canary, np.full(300, 0.9), version="2", variant="canary", start=start,
              host="canary", log_format=log_format)  # fmt: skip
    # After the window: ignored.
    later = generate_churn(200, seed=13, drift=1.0)
    write_log(log_dir, later, np.zeros(200), start=end, host="later", log_format=log_format)

    hour = 1 if log_format == "jsonl" else 4
    assert cli.main(monitor_args(hour, log_dir, tmp_path / "labels")) == 0
    result = _result(capsys)

    assert result["drift_detected"] is True
    assert result["champion_version"] == "1"
    assert result["rows"]["champion"] == 3000 and result["rows"]["window"] == 3300
    assert result["rows"]["by_version"] == {"stable/v1": 3000, "canary/v2": 300}
    assert {"monthly_charges", "support_calls_90d"} <= set(result["drifted_columns"])
    assert result["data_drift"]["detected"] and result["prediction_drift"]["detected"]
    assert result["drift_share"] == len(result["drifted_columns"]) / 16
    assert result["performance"]["judged"] is False
    assert "no label files" in result["performance"]["reason"]
    assert result["performance_reason"] == result["performance"]["reason"]
    assert result["performance"]["labels"]["files"] == 0
    assert result["window"]["key"] == f"20261120T0{hour}0000Z_20261120T0{hour + 1}0000Z"

    reports = result["reports"]
    assert Path(reports["dir"]).name == f"window={result['window']['key']}"
    assert Path(reports["dir"]).parent.name == monitoring_env.name
    html = Path(reports["data_drift_html"]).read_text()
    assert all(column in html for column in result["drifted_columns"])
    assert Path(reports["prediction_drift_html"]).stat().st_size > 0
    snapshot = json.loads(Path(reports["data_drift_json"]).read_text())
    evidently_drifted = {
        m["config"]["column"]
        for m in snapshot["metrics"]
        if m["config"]["type"].endswith("ValueDrift") and m["value"] >= m["config"]["threshold"]
    }
    assert not reports["sampled"]  # 3,000 and 8,000 rows: the report saw exactly what we judged
    assert evidently_drifted == set(result["drifted_columns"])
    assert json.loads(Path(reports["result_json"]).read_text())["drift_detected"] is True

    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.tags["mlops.champion_version"] == "1"
    assert run.data.tags["mlops.window"] == result["window"]["key"]
    assert run.data.tags["mlops.drift_detected"] == "true"
    assert run.data.metrics["drift_share"] == pytest.approx(result["drift_share"])
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "monitoring")}
    assert "monitoring/data_drift.html" in artifacts and "monitoring/monitoring.json" in artifacts

    extra = result["asset_extra"]
    assert extra["drifted_columns"] == result["drifted_columns"]
    assert extra["report"] == reports["data_drift_html"]
    assert extra["champion_version"] == "1" and extra["window"]["start"] == start.isoformat()
    assert extra["mlflow_run"].endswith(run.info.run_id)
    # The task log: the report path and the per-column table.
    assert reports["data_drift_html"] in caplog.text
    assert any(
        line.split()[:2] == ["support_calls_90d", "wasserstein"] and line.endswith("YES")
        for line in caplog.messages
    )

    # A retry of the same window reuses its report directory and MLflow run.
    assert cli.main(monitor_args(hour, log_dir, tmp_path / "labels")) == 0
    assert _result(capsys)["mlflow_run_id"] == result["mlflow_run_id"]


def test_false_alarm_rate_on_fresh_samples_is_low(monitoring_env: Champion) -> None:
    """Ten fresh samples of the training distribution and ten drifted ones, judged with the
    default policy by the same functions the step uses (scores from the champion)."""
    from mlops_steps.common.drift import data_drift, prediction_drift
    from mlops_steps.common.predictions import check_features
    from mlops_steps.common.tracking import connect
    from mlops_steps.core.policies import DriftPolicy
    from mlops_steps.core.settings import load_settings
    from mlops_steps.monitoring.reference import (
        champion_features,
        load_champion,
        reference_data,
        reference_scores,
    )

    settings, client = load_settings(), connect()
    champion = load_champion(client, settings.model_name)
    kinds = champion_features(client, champion)
    frame, _, sha = reference_data(settings, champion)
    reference = check_features(frame, kinds, source="reference", max_null_share=0.0)
    ref_scores = reference_scores(settings, champion, frame, kinds, sha)
    policy = DriftPolicy()

    def judge(sample: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
        current = check_features(sample, kinds, source="sample", max_null_share=0.0)
        return (
            data_drift(reference, current, kinds, policy),
            prediction_drift(ref_scores, score(monitoring_env.model, sample), policy),
        )

    alarms, column_alarms, detected = 0, 0, 0
    fresh_psi, drifted_psi, fresh_margin = [], [], []
    for seed in range(SEEDS):
        data, prediction = judge(generate_churn(2000, seed=100 + seed))
        alarms += data["detected"] or prediction["detected"]
        column_alarms += len(data["drifted_columns"])
        fresh_psi.append(prediction["score"])
        fresh_margin.append(max(c["score"] / c["threshold"] for c in data["columns"]))
        data, prediction = judge(generate_churn(2000, seed=200 + seed, drift=0.5))
        detected += data["detected"] and prediction["detected"]
        drifted_psi.append(prediction["score"])
    print(
        f"\nfalse alarms {alarms}/{SEEDS} windows, {column_alarms}/{SEEDS * len(kinds)} column "
        f"tests (highest column score {max(fresh_margin):.0%} of its threshold), score PSI "
        f"{min(fresh_psi):.3f}-{max(fresh_psi):.3f}; drift=0.5 detected {detected}/{SEEDS} "
        f"(score PSI {min(drifted_psi):.3f}-{max(drifted_psi):.3f})"
    )
    assert alarms / SEEDS <= 0.1
    assert column_alarms / (SEEDS * len(kinds)) <= 0.02
    assert detected == SEEDS


def test_labels_join_gives_performance_and_flipped_labels_degrade(
    monitoring_env: Champion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = window(2)
    log_dir, labels = tmp_path / "log", tmp_path / "labels"
    fresh = generate_churn(3000, seed=21)
    write_log(log_dir, fresh, score(monitoring_env.model, fresh), start=start, batch=10)
    labels.mkdir()
    # Half the labels arrive by customer, half by request id and row (batches of 10 rows);
    # all become known before the window's end (later ones are left for a later window).
    known = (end - dt.timedelta(seconds=1)).isoformat()
    by_customer = fresh[[ID_COLUMN, LABEL_COLUMN]].iloc[:1500]
    by_customer.rename(columns={ID_COLUMN: "entity_id"}).assign(label_time=known).to_csv(
        labels / "2026-11-21-crm.csv", index=False
    )
    by_request = pd.DataFrame(
        {
            "request_id": [f"req-test-host-{i // 10:07d}" for i in range(1500, 3000)],
            "row": [i % 10 for i in range(1500, 3000)],
            LABEL_COLUMN: fresh[LABEL_COLUMN].iloc[1500:].to_numpy(),
            "label_time": known,
        }
    )
    by_request.to_parquet(labels / "2026-11-21-feedback.parquet")

    assert cli.main(monitor_args(2, log_dir, labels)) == 0
    result = _result(capsys)
    perf = result["performance"]
    assert result["drift_detected"] is False and result["reasons"] == []
    assert perf["labeled_rows"] == 3000
    assert perf["joined_by"] == {"request_id+row": 1500, "entity_id": 1500}
    counted = perf["labels"]
    assert (counted["files"], counted["rows_read"], counted["kept"]) == (2, 3000, 3000)
    assert counted["late"] == counted["duplicates"] == counted["unmatched_labels"] == 0
    assert result["asset_extra"]["labels"] == {"labelled_rows": 3000, "join_rate": 1.0}
    assert perf["auc"] > 0.8 and perf["degraded"] is False
    assert abs(perf["auc_drop"]) < perf["limits"]["auc"]["limit"]

    # Labels that contradict the scores: the champion no longer predicts what happens.
    flipped = fresh[[ID_COLUMN, LABEL_COLUMN]].rename(columns={ID_COLUMN: "entity_id"})
    flipped[LABEL_COLUMN] = 1 - flipped[LABEL_COLUMN]
    start, end = window(3)
    flipped["label_time"] = (end - dt.timedelta(seconds=1)).isoformat()
    write_log(tmp_path / "log3", fresh, score(monitoring_env.model, fresh), start=start)
    (labels / "2026-11-21-feedback.parquet").unlink()
    flipped.to_csv(labels / "2026-11-21-crm.csv", index=False)
    assert cli.main(monitor_args(3, tmp_path / "log3", labels)) == 0
    result = _result(capsys)
    assert result["performance"]["degraded"] is True
    assert result["drift_detected"] is True
    assert result["reasons"] == [r for r in result["reasons"] if r.startswith("performance")]
    assert result["asset_extra"]["performance_degraded"] is True


def _null_every_tenth(features: dict[str, Any], counter: list[int]) -> None:
    counter[0] += 1
    if counter[0] % 10 == 0:
        features["support_calls_90d"] = None


def _string_in_odd_rows(features: dict[str, Any], counter: list[int]) -> None:
    counter[0] += 1
    if counter[0] % 2:
        features["tenure_months"] = str(features["tenure_months"])


Edit = Callable[[dict[str, Any], list[int]], None]
FAIL_CLOSED: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    "empty_window": ({"hour_offset": 5}, EmptyWindow, "no predictions logged"),
    "too_few_rows": ({"rows": 50}, EmptyWindow, "50 predictions by champion v1"),
    "only_other_versions": ({"version": "7"}, EmptyWindow, "'canary/v7': 400"),
    "all_null_feature": (
        {"edit": lambda f, _: f.update(tenure_months=None)},
        AllNullFeature,
        "'tenure_months' is null in all 400 rows",
    ),
    "some_null_values": ({"edit": _null_every_tenth}, NullFeatureValues, "'support_calls_90d'"),
    "missing_column": (
        {"edit": lambda f, _: f.pop("avg_monthly_gb")},
        SchemaMismatch,
        "['avg_monthly_gb'] of the champion's feature spec are missing",
    ),
    "extra_column": (
        {"edit": lambda f, _: f.update(loyalty_tier="gold")},
        SchemaMismatch,
        "['loyalty_tier'] are not in the champion's feature spec",
    ),
    "wrong_type": (
        {"edit": lambda f, _: f.update(monthly_charges=str(f["monthly_charges"]))},
        SchemaMismatch,
        "'monthly_charges' holds string, expected a number",
    ),
    "type_changes_between_rows": (
        {"edit": _string_in_odd_rows},
        SchemaMismatch,
        "'tenure_months' holds",
    ),
    "score_missing": (
        {"scores": [None] * 400},
        SchemaMismatch,
        "'score' is missing or not a number in 400 of 400 champion rows",
    ),
    "category_as_number": (
        {"edit": lambda f, _: f.update(contract_type=2)},
        SchemaMismatch,
        "'contract_type' holds int64, expected a string",
    ),
}


@pytest.mark.parametrize("case", sorted(FAIL_CLOSED))
def test_unjudgeable_windows_fail_closed_with_a_named_error(
    case: str, monitoring_env: Champion, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlops_steps.core.settings import load_settings

    options, error, message = FAIL_CLOSED[case]
    hour = 10 + sorted(FAIL_CLOSED).index(case)
    start, _ = window(hour + options.get("hour_offset", 0))
    frame = generate_churn(options.get("rows", 400), seed=31)
    counter = [0]
    edit = options.get("edit")
    write_log(
        tmp_path / "log",
        frame,
        options.get("scores", np.full(len(frame), 0.3)),
        start=start,
        version=options.get("version", "1"),
        variant="canary" if "version" in options else "stable",
        edit=(lambda f: edit(f, counter)) if edit else None,
    )
    settings = load_settings()
    argv = monitor_args(hour, tmp_path / "log", tmp_path / "labels")
    args = cli.build_parser(settings).parse_args(argv)
    with pytest.raises(error, match=re.escape(message)):
        args.handler(args, settings)
    # Through the CLI: exit 2 (rejected, never retried) and no report claiming anything.
    assert cli.main(argv) == 2
    assert message in caplog.text
    assert not any(settings.monitoring_root.glob(f"window={Window(*window(hour)).key}"))


def test_missing_reference_data_is_named(
    monitoring_env: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.core.settings import load_settings
    from mlops_steps.monitoring.reference import ReferenceDataError

    monkeypatch.setenv("MLOPS_DATA_ROOT", str(tmp_path / "elsewhere"))
    settings = load_settings()
    argv = monitor_args(30, tmp_path / "log", tmp_path / "labels")
    args = cli.build_parser(settings).parse_args(argv)
    with pytest.raises(ReferenceDataError, match="training partition reference is not at"):
        args.handler(args, settings)


def test_no_champion_skips(tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["monitor", "--window-hours", "1"]) == 3
    assert "no version has the alias 'champion'" in _result(capsys)["reason"]


START, END = "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z"
BAD_WINDOWS = {
    "start_without_end": ["--window-start", START],
    "unparseable_end": ["--window-start", START, "--window-end", "x"],
    "end_before_start": ["--window-start", END, "--window-end", START],
    "both_forms": ["--window-start", START, "--window-end", END, "--window-hours", "2"],
}


@pytest.mark.parametrize("case", sorted(BAD_WINDOWS))
def test_bad_windows_are_rejected(case: str, mlops_env: Path) -> None:
    assert cli.main(["monitor", *BAD_WINDOWS[case]]) == 2


def test_window_arithmetic() -> None:
    until = dt.datetime(2026, 11, 20, 0, 15, tzinfo=dt.UTC)
    window_ = Window.ending(until, 2)
    assert window_.key == "20261119T221500Z_20261120T001500Z"
    # Lines are filed by the day they were written: the day after the end may hold some.
    assert window_.days() == [dt.date(2026, 11, 19), dt.date(2026, 11, 20), dt.date(2026, 11, 21)]


@pytest.mark.parametrize("log_format", ["jsonl", "parquet"])
def test_reads_what_the_service_writes_locally_and_on_s3(
    s3_endpoint: str, tmp_path: Path, log_format: str
) -> None:
    """The service's own PredictionLog writes; the reader gets every row and feature back."""
    import boto3

    from mlops_serving.predlog import PredictionLog
    from mlops_steps.common.predictions import check_features

    bucket = f"predictions-{log_format}"  # moto keeps one store per test process
    boto3.client("s3").create_bucket(Bucket=bucket)
    frame = generate_churn(50, seed=5)
    records = frame.loc[:, list(KINDS)].to_dict("records")
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in records]
    now = time.time()
    when = Window(
        dt.datetime.fromtimestamp(now - 60, dt.UTC), dt.datetime.fromtimestamp(now + 60, dt.UTC)
    )
    for sink in (str(tmp_path / "log"), f"s3://{bucket}/churn/serving"):
        log = PredictionLog(sink, log_format=log_format)
        ids = list(frame[ID_COLUMN])
        scores = np.linspace(0, 1, 50)
        log.record(request_id="r1", entity_ids=ids, variant="stable", version="4",
                   features=records, scores=scores, timestamp=now)  # fmt: skip
        log.flush()
        served = read_window(sink, when, KINDS)
        assert served.meta["model_version"].tolist() == ["4"] * 50, sink
        assert served.meta["row"].tolist() == list(range(50)), sink
        assert served.meta["entity_id"].tolist() == frame[ID_COLUMN].tolist(), sink
        checked = check_features(served.features, KINDS, source=sink, max_null_share=0.0)
        expected = check_features(frame, KINDS, source="frame", max_null_share=0.0)
        pd.testing.assert_frame_equal(checked, expected, check_categorical=False)


def test_a_line_still_being_written_is_left_for_the_next_run(tmp_path: Path) -> None:
    frame = generate_churn(20, seed=6)
    start, end = window(40)
    write_log(tmp_path, frame, np.zeros(20), start=start)
    path = next(tmp_path.glob("date=*/*.jsonl"))
    with path.open("a") as handle:
        handle.write('{"request_id": "half", "timestamp": "2026-11')
    assert len(read_window(str(tmp_path), Window(start, end), KINDS).meta) == 20
