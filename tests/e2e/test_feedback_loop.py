"""The feedback loop end to end, through Airflow's own dag.test() against a real MLflow server and
a real model service: the champion serves drifted customers, their outcomes land later as
labels, the monitoring DAG sees the drift and the champion's drop and emits the drift event, and
the training DAG, given that event's window, retrains on the served, labelled customers (mixed
with the champion's training rows). The retrained model must beat the champion on the drifted
hold-out by a clear margin without forgetting the reference one.

The drift event reaching the training DAG through the scheduler is the monitoring DAG's own test
(and ``make demo``'s fourth act); here the run gets the event's window as the Param a person
would give it, so the rest is checked in one process."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pendulum
import pytest
from mlflow import MlflowClient

from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from tests.dags.helpers import for_dag_test, load_dags, return_value, task_states
from tests.service_process import Service, serve_and_wait_for_log

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "feedback-admin-token-0123456789abcdef"
CHURN = load_contract("churn")
ROWS, SERVED = 20_000, 10_000
# The synthetic drift changes the concept: retrained on the served customers, AUC on their
# hold-out rises from about 0.65 to 0.81 (+0.16, measured); half of that is a clear margin.
MARGIN = 0.08
# The gate's bound on the reference hold-out (GateThresholds.max_reference_relative_drop).
REFERENCE_RELATIVE_DROP = 0.03
CONF = {"max_latency_ms": 1000}  # latency has its own tests; a busy machine must not fail this


def test_drift_retrains_on_served_labelled_traffic_and_beats_the_champion_there(
    airflow_db: Path,
    tracking: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    service_starter: Callable[..., Service],
) -> None:
    from mlops_steps.core.settings import load_settings

    log_dir, landing = tmp_path / "predictions", tmp_path / "labels"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", tracking)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the tasks must get it from the connection
    monkeypatch.setenv("MLOPS_PREDICTION_LOG", str(log_dir))
    monkeypatch.setenv("MLOPS_LABELS", str(landing))
    settings = load_settings()
    model = settings.model_name  # the test's own, with churn's contract
    dags = load_dags(monkeypatch, "local")
    training = for_dag_test(dags[f"mlops_training__{model}"])
    monitoring = for_dag_test(dags[f"mlops_monitoring__{model}"])
    monkeypatch.delenv("MLOPS_RUNNER")
    client = MlflowClient(tracking)

    # 1. v1 learns the world before the drift, and serves.
    run = training.test(
        logical_date=pendulum.datetime(2026, 11, 20, tz="UTC"), run_conf={**CONF, "rows": ROWS}
    )
    assert str(run.state) == "success", task_states(run)
    client.set_registered_model_alias(model, "champion", "1")
    service = service_starter(tracking, model_name=model, admin_token=ADMIN_TOKEN,
                              SERVING_PREDICTION_LOG=str(log_dir))  # fmt: skip

    # 2. Drifted customers are served; their outcomes arrive later, keyed by customer id.
    customers = generate_churn(SERVED, seed=7, drift=0.8)
    serve_and_wait_for_log(service, log_dir, customers, CHURN)
    landing.mkdir()
    labels = landing / "outcomes.csv"
    known_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    customers.rename(columns={CHURN.id_column: "entity_id"}).assign(label_time=known_at).loc[
        :, ["entity_id", CHURN.label, "label_time"]
    ].to_csv(labels, index=False)

    # 3. Monitoring sees the drift and the champion's drop on the labelled rows.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep(max(0.0, (now - dt.datetime.now(dt.UTC)).total_seconds()))
    monitored = monitoring.test(logical_date=pendulum.instance(now), run_conf={"window_hours": 1})
    assert task_states(monitored) == {"monitor": "success", "announce_drift": "success"}
    verdict = return_value(monitored, "monitor")
    assert verdict["drift_detected"] is True
    performance = verdict["performance"]
    assert performance["labeled_rows"] == SERVED and performance["degraded"] is True
    window = verdict["asset_extra"]["window"]

    # 4. The retraining run, given the drift event's window, learns from what was served.
    retrain_date = pendulum.instance(now) + dt.timedelta(minutes=1)
    retrained = training.test(
        logical_date=retrain_date,
        run_conf={**CONF, "served_window": f"{window['start']}/{window['end']}"},
    )
    assert str(retrained.state) == "success", task_states(retrained)
    partition = settings.dataset_root / f"partition={retrain_date:%Y%m%dT%H%M%S}"
    manifest = json.loads((partition / "manifest.json").read_text())
    served = manifest["served"]
    assert (served["window"], served["window_from"]) == (window, "served_window")
    assert served["labels"]["files"] == [
        {
            "name": str(labels),
            "sha256": hashlib.sha256(labels.read_bytes()).hexdigest(),
            "rows": SERVED,
            "keys": ["entity_id"],
        }
    ]
    assert served["join"]["join_rate"] == 1.0 and served["join"]["unmatched_labels"] == 0
    assert served["rows"]["labelled"] == SERVED
    assert served["reference"]["model_version"] == "1"
    assert served["reference"]["rows"] == pytest.approx(SERVED, rel=0.02)  # share 0.5

    # 5. Judged on both hold-outs: clearly better where the drift is, not worse where it is not.
    evaluation = json.loads((partition / "results" / "evaluate.json").read_text())
    recent, reference = evaluation["holdouts"]["recent"], evaluation["holdouts"]["reference"]
    margin = recent["challenger"]["auc"] - recent["champion"]["auc"]
    assert margin >= MARGIN, (recent["challenger"]["auc"], recent["champion"]["auc"])
    assert recent["comparison"]["auc_delta_ci_low"] > 0
    assert reference["challenger"]["auc"] >= reference["champion"]["auc"] * (
        1 - REFERENCE_RELATIVE_DROP
    )
    version = client.get_model_version(model, "2")
    assert version.tags["mlops.gate.decision"] == "passed"
    assert version.tags["mlops.training_data"] == "served"
    assert client.get_registered_model(model).aliases == {"champion": "1", "challenger": "2"}
