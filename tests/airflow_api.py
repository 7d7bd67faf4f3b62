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

from airflow_rest import AirflowRest
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

    def respond() -> None:
        try:
            waiting = wait_for(
                f"an approval request of {dag_id}", lambda: api.pending_hitl(dag_id), 600
            )
            outcome.append((waiting[0], api.answer_hitl(waiting[0], option)))
        except Exception as exc:  # surfaced by the test's assertions, not lost in the thread
            outcome.append(exc)

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread, outcome
