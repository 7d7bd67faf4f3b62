"""Alerts under a real Airflow: API server, scheduler, DAG processor and triggerer as separate
processes on loopback (SQLite, LocalExecutor), a temporary AIRFLOW_HOME and a DAGs folder with
only tests/e2e/alert_dags/. Deadline callbacks run where they run in production: the scheduler
marks the deadline missed, the triggerer awaits the callback.

One test, because starting the four processes is most of its cost (~30-60 s here). The processes
are started by the same harness as the lifecycle demo (scripts/local_airflow.py).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_rest import ApiError
from local_airflow import LiveAirflow
from processes import free_port, wait_for
from tests.alert_receivers import HttpReceiver, http_receiver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ALERT_DAGS = Path(__file__).parent / "alert_dags" / "alert_dags.py"
DAG_IDS = (
    "alerts_retry_then_fail",
    "alerts_queued_deadline",
    "alerts_param_deadline",
    "alerts_next_run_due",
    "alerts_approval",
)
WEBHOOK_TOKEN = "live-test-token-" + secrets.token_hex(8)


@dataclass
class Live:
    airflow: LiveAirflow
    alerts_file: Path
    webhook: HttpReceiver

    @property
    def base_url(self) -> str:
        return self.airflow.base_url

    @property
    def home(self) -> Path:
        return self.airflow.home

    @property
    def logs(self) -> Path:
        return self.airflow.logs

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        run = self.airflow.rest.trigger_run(dag_id, conf, logical_date=logical_date)
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.airflow.rest.run(dag_id, run_id)["state"])

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        return [json.loads(line) for line in self.alerts_file.read_text().splitlines()]

    def callbacks(self) -> list[tuple[str, str]]:
        """(state, output) of every deadline callback, from the metadata database."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            return list(db.execute("SELECT state, output FROM callback"))


def _wait(what: str, check: Callable[[], Any], timeout: float, logs: Path) -> Any:
    return wait_for(what, check, timeout, logs, errors=(OSError, ApiError, sqlite3.Error))


@pytest.fixture
def live_airflow(tmp_path: Path) -> Iterator[Live]:
    dags, mlops_home = tmp_path / "dags", tmp_path / "mlops"
    dags.mkdir()
    shutil.copy(ALERT_DAGS, dags / ALERT_DAGS.name)
    with http_receiver() as webhook:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
        airflow = LiveAirflow.configure(
            tmp_path / "airflow",
            dags_folder=dags,
            port=free_port(),
            users={"admin": "admin"},
            base_env=base_env,
            extra_env={
                "MLOPS_HOME": str(mlops_home),
                "MLOPS_ALERT_CHANNELS": "file,webhook",
                "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps(
                    {"conn_type": "http", "host": f"{webhook.url}/hook", "password": WEBHOOK_TOKEN}
                ),
            },
        )
        airflow.migrate()
        try:
            airflow.start()
            airflow.wait_until_up(120)
            _wait(
                "the test DAGs to be parsed",
                lambda: airflow.rest.dag_ids() == set(DAG_IDS),
                120,
                airflow.logs,
            )
            yield Live(airflow, mlops_home / "alerts" / "alerts.jsonl", webhook)
        finally:
            airflow.stop()


def test_failures_approvals_and_deadlines_alert_once_each(live_airflow: Live) -> None:
    live = live_airflow
    logs = live.logs
    runs = {
        "alerts_retry_then_fail": live.trigger("alerts_retry_then_fail"),
        "alerts_queued_deadline": live.trigger("alerts_queued_deadline"),
        # Param default 60 min; this run's conf makes it 3 s.
        "alerts_param_deadline": live.trigger("alerts_param_deadline", {"deadline_minutes": 0.05}),
        "alerts_approval": live.trigger("alerts_approval"),
        # A "scheduled" run: its deadline counts from the logical date.
        "alerts_next_run_due": live.trigger(
            "alerts_next_run_due", logical_date=datetime.now(UTC).isoformat()
        ),
    }

    def of(dag_id: str, kind: str) -> list[dict[str, Any]]:
        return [
            a
            for a in live.alerts()
            if a["dag_id"] == dag_id and a["run_id"] == runs[dag_id] and a["kind"] == kind
        ]

    # A missed deadline alerts from the triggerer while the run is still going.
    for dag_id, name in (
        ("alerts_queued_deadline", "tiny"),
        ("alerts_param_deadline", "param"),
        ("alerts_next_run_due", "next_due"),
    ):
        missed = functools.partial(of, dag_id, "deadline_missed")
        (alert,) = _wait(f"{dag_id}'s deadline alert", missed, 90, logs)
        assert alert["details"]["deadline"] == name
        assert alert["details"]["run_state"] in ("running", "queued")
        assert alert["log_url"] == f"{live.base_url}/dags/{dag_id}/runs/{quote(runs[dag_id])}"
    allowed = of("alerts_param_deadline", "deadline_missed")[0]["details"]["allowed"]
    assert allowed == "0:00:03", allowed  # the Param's 0.05 min, not the 60 min default

    # The approval announces itself with the Required Actions link of its run.
    (waiting,) = _wait("the approval alert", lambda: of("alerts_approval", "approval_waiting"),
                       90, logs)  # fmt: skip
    assert waiting["task_id"] == "approve"
    assert waiting["details"]["required_actions_url"].endswith("/tasks/approve/required_actions")
    assert "Ship it?" in waiting["message"]

    # A task that fails after one retry: one alert, for the last try, with the log URL.
    _wait("the failing run to fail",
          lambda: live.run_state("alerts_retry_then_fail", runs["alerts_retry_then_fail"])
          == "failed", 90, logs)  # fmt: skip
    (failed,) = _wait("the failure alert", lambda: of("alerts_retry_then_fail", "task_failed"),
                      30, logs)  # fmt: skip
    assert failed["task_id"] == "fail_always"
    assert failed["try"] == 2
    assert failed["log_url"].startswith(f"{live.base_url}/dags/alerts_retry_then_fail/runs/")
    assert failed["log_url"].endswith("/tasks/fail_always?try_number=2")
    assert "RuntimeError: boom (on purpose)" in failed["message"]

    # Its 40 s deadline is still "missed" by Airflow (deadlines are only pruned on success):
    # the callback runs in the triggerer and stays silent.
    _wait("the failed run's deadline callback",
          lambda: any("ended before its deadline" in (out or "") for _, out in live.callbacks()),
          90, logs)  # fmt: skip
    assert of("alerts_retry_then_fail", "deadline_missed") == []
    assert len(of("alerts_retry_then_fail", "task_failed")) == 1

    # Every alert went to both channels, once: the webhook got the same records, with the token.
    records = live.alerts()
    assert len(records) == len({a["alert_id"] for a in records}) == 5
    received = {r.json()["alert_id"]: r for r in live.webhook.requests}
    assert set(received) == {a["alert_id"] for a in records}
    for request in received.values():
        assert request.path == "/hook"
        assert request.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    states = [state for state, _ in live.callbacks()]
    assert states and set(states) == {"success"}, live.callbacks()
    for log in [*logs.glob("*.log"), *(live.home / "logs").rglob("*.log")]:
        assert WEBHOOK_TOKEN not in log.read_text(errors="replace"), log
