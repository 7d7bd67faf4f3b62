"""Alerts under a real Airflow: API server, scheduler, DAG processor and triggerer as separate
processes on loopback (SQLite, LocalExecutor), a temporary AIRFLOW_HOME and a DAGs folder with
only tests/e2e/alert_dags/. Deadline callbacks run where they run in production: the scheduler
marks the deadline missed, the triggerer awaits the callback.

One test, because starting the four processes is most of its cost (~30-60 s here).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

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
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
WEBHOOK_TOKEN = "live-test-token-" + secrets.token_hex(8)


@dataclass
class LiveAirflow:
    base_url: str
    home: Path
    alerts_file: Path
    webhook: HttpReceiver
    logs: Path
    token: str = ""

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        response = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        response = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return str(response.json()["state"])

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        return [json.loads(line) for line in self.alerts_file.read_text().splitlines()]

    def callbacks(self) -> list[tuple[str, str]]:
        """(state, output) of every deadline callback, from the metadata database."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            return list(db.execute("SELECT state, output FROM callback"))


def _wait(what: str, check: Callable[[], Any], timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (requests.RequestException, sqlite3.Error):
            result = None
        if result:
            return result
        time.sleep(0.5)
    tails = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs.glob("*.log")
    )
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each component's own process group (it and its workers), then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    end = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def live_airflow(tmp_path: Path) -> Iterator[LiveAirflow]:
    from mlflow_server import free_port

    home, dags, logs, mlops_home = (tmp_path / d for d in ("airflow", "dags", "logs", "mlops"))
    for directory in (home, dags, logs):
        directory.mkdir()
    shutil.copy(ALERT_DAGS, dags / ALERT_DAGS.name)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(12)
    (home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({"admin": password})
    )
    with http_receiver() as webhook:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
                "AIRFLOW__API__BASE_URL": base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # Log servers of the scheduler and triggerer (8793/8794 by default): free ports, so
                # another local Airflow does not collide with this one.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "MLOPS_HOME": str(mlops_home),
                "MLOPS_ALERT_CHANNELS": "file,webhook",
                "AIRFLOW_CONN_ALERTS_WEBHOOK": json.dumps(
                    {"conn_type": "http", "host": f"{webhook.url}/hook", "password": WEBHOOK_TOKEN}
                ),
            }
        )
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for component in COMPONENTS:
                with (logs / f"{component}.log").open("wb") as out:
                    processes.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "airflow", component],
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,  # its own group: stopped with its workers
                        )
                    )
            live = LiveAirflow(
                base_url, home, mlops_home / "alerts" / "alerts.jsonl", webhook, logs
            )

            def token() -> str:
                response = requests.post(
                    f"{base_url}/auth/token",
                    json={"username": "admin", "password": password},
                    timeout=10,
                )
                return str(response.json()["access_token"]) if response.ok else ""

            live.token = _wait("the API server", token, 120, logs)
            _wait(
                "the test DAGs to be parsed",
                lambda: (
                    {d["dag_id"] for d in live.api("GET", "/api/v2/dags").json()["dags"]}
                    == set(DAG_IDS)
                ),
                120,
                logs,
            )
            yield live
        finally:
            _stop(processes)


def test_failures_approvals_and_deadlines_alert_once_each(live_airflow: LiveAirflow) -> None:
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
        (alert,) = _wait(f"{dag_id}'s deadline alert", lambda d=dag_id: of(d, "deadline_missed"),
                         90, logs)  # fmt: skip
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
