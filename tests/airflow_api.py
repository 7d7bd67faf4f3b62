"""Airflow's own REST API, served in-process on the test metadata database.

``dag.test()`` parks a human-in-the-loop task until someone answers through the API; these helpers
answer the way a person in the UI (or a script) would: log in, list what waits, PATCH a response.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

APPROVER = "approver"  # declared in tests/conftest.py (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS)


@functools.cache
def _client() -> Any:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    return TestClient(create_app("core"))


def _token(username: str) -> str:
    passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    password = json.loads(passwords.read_text())[username]
    response = _client().post("/auth/token", json={"username": username, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


def call(method: str, path: str, username: str = APPROVER, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {_token(username)}"}
    return _client().request(method, path, headers=headers, **kwargs)


def wait_for_approval_request(dag_id: str, timeout: float = 600) -> dict[str, Any]:
    """The first unanswered HITL request of ``dag_id`` (polls like a person refreshing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = call("GET", f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails")
        response.raise_for_status()
        waiting = [d for d in response.json()["hitl_details"] if not d.get("response_received")]
        if waiting:
            return dict(waiting[0])
        time.sleep(1)
    raise AssertionError(f"no approval request of {dag_id} within {timeout} s")


def answer(detail: dict[str, Any], option: str, username: str = APPROVER) -> Any:
    ti = detail["task_instance"]
    path = (
        f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/"
        f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
    )
    response = call("PATCH", path, username, json={"chosen_options": [option], "params_input": {}})
    assert response.status_code == 200, response.text
    return response.json()


def answer_in_background(dag_id: str, option: str) -> tuple[threading.Thread, list[Any]]:
    """Answer the next approval request of ``dag_id`` from a thread (``dag.test()`` blocks the
    test's own thread until it is answered). The list receives the response, or the error."""
    outcome: list[Any] = []

    def respond() -> None:
        try:
            detail = wait_for_approval_request(dag_id)
            outcome.append((detail, answer(detail, option)))
        except Exception as exc:  # surfaced by the test's assertions, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread, outcome
