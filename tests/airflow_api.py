"""Airflow's own REST API, served in-process on the test metadata database.

``dag.test()`` parks a human-in-the-loop task until someone answers through the API; these helpers
answer the way a person in the UI (or a script) would: log in, list what waits, PATCH a response,
through the same client as the lifecycle demo (scripts/airflow_rest.py). The API app runs under
uvicorn in a daemon thread of the test process, so it reads the metadata database ``dag.test()``
writes, over real HTTP on loopback.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from airflow_rest import AirflowRest, ApiError
from processes import wait_for

APPROVER = "approver"  # declared in tests/conftest.py (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS)


@functools.cache
def client() -> AirflowRest:
    """A client as :data:`APPROVER` of the API app, served from this process (started once)."""
    import uvicorn
    from airflow.api_fastapi.app import create_app

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app("core"), lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True).start()
    wait_for("the in-process Airflow API", lambda: server.started, 60)
    host, port = listening.getsockname()
    passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    password = json.loads(passwords.read_text())[APPROVER]
    return AirflowRest(f"http://{host}:{port}", APPROVER, password)


def answer_in_background(dag_id: str, option: str) -> tuple[threading.Thread, list[Any]]:
    """Answer the next approval request of ``dag_id`` from a thread (``dag.test()`` blocks the
    test's own thread until it is answered). The list receives (request, response), or the
    error."""
    outcome: list[Any] = []
    # Started here, not in the thread: importing Airflow's API app there while dag.test() imports
    # its models in this thread deadlocks on the two modules' import locks.
    api = client()

    def parked() -> list[dict[str, Any]]:
        """Open requests whose task has parked itself in ``awaiting_input``. Airflow resumes a
        parked task when the answer arrives, and a task that parks after an earlier answer
        resumes itself, under row locks (FOR UPDATE) that SQLite ignores: an answer landing
        between the request's creation and the parking strands the task (seen: answered 82 ms
        after the request, the run waited forever). A person in the UI is never that fast."""
        return [
            detail
            for detail in api.pending_hitl(dag_id)
            if api.task_instance(
                dag_id, detail["task_instance"]["dag_run_id"], detail["task_instance"]["task_id"]
            )["state"]
            == "awaiting_input"
        ]

    def respond() -> None:
        try:
            # An API error while dag.test() writes the same SQLite file (a 5xx, a lost token) is
            # "not yet", as a person would reload the page.
            waiting = wait_for(
                f"a parked approval request of {dag_id}",
                parked,
                600,
                errors=(OSError, ValueError, ApiError),
            )
            outcome.append((waiting[0], api.answer_hitl(waiting[0], option)))
        except Exception as exc:  # surfaced by the test's assertions, not lost in the thread
            outcome.append(exc)
            _reject_pending(dag_id)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread, outcome


def _reject_pending(dag_id: str) -> None:
    """Answer every open request of ``dag_id`` with "Reject" straight in the metadata database,
    and resume its task if it is parked, as the API's answer route does.

    Under ``dag.test()`` an unanswered request blocks the test's thread for good: signals (and so
    pytest's timeout) are not handled while it waits. When the API could not answer, the run is
    released on the safe side and the test fails on the error in its outcome instead of hanging.
    """
    from airflow._shared.timezones import timezone
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        open_requests = (
            session.query(HITLDetail, TaskInstance)
            .join(TaskInstance, TaskInstance.id == HITLDetail.ti_id)
            .filter(TaskInstance.dag_id == dag_id, HITLDetail.responded_at.is_(None))
        )
        for request, task_instance in open_requests:
            request.chosen_options = ["Reject"]
            request.params_input = {}
            request.responded_at = timezone.utcnow()
            request.responded_by = {"id": "test-harness", "name": "test harness (API failed)"}
            if task_instance.state == TaskInstanceState.AWAITING_INPUT:
                handle_event_submit(
                    TriggerEvent(request.as_resume_event_payload()),
                    task_instance=task_instance,
                    session=session,
                )
