"""The Airflow REST client (scripts/airflow_rest.py) against a loopback stand-in of the API server:
what it sends on the wire, that errors keep their status and body and are never retried, except
that creating a named resource is repeated through server errors (the name makes it idempotent)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_rest import AirflowRest, ApiError
from tests.fake_apis import LoopbackServer, Recorded

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
QUOTED_RUN = "manual__2026-01-01T00%3A00%3A00%2B00%3A00"
WAITING = {
    "subject": "Release v2?",
    "response_received": False,
    "task_instance": {"dag_id": "d", "dag_run_id": RUN_ID, "task_id": "approve", "map_index": -1},
}


def _airflow(request: Recorded) -> tuple[int, Any]:
    """Just enough of Airflow's API for the client's calls."""
    routes: dict[tuple[str, str], tuple[int, Any]] = {
        ("POST", "/auth/token"): (201, {"access_token": "jwt"}),
        ("POST", "/api/v2/dags/d/dagRuns"): (200, {"dag_run_id": RUN_ID}),
        ("GET", f"/api/v2/dags/d/dagRuns/{QUOTED_RUN}"): (200, {"state": "running"}),
        ("GET", "/api/v2/dags/d/dagRuns/~/hitlDetails"): (
            200,
            {"hitl_details": [{**WAITING, "response_received": True}, WAITING]},
        ),
        ("PATCH", f"/api/v2/dags/d/dagRuns/{QUOTED_RUN}/taskInstances/approve/-1/hitlDetails"): (
            200,
            {"chosen_options": ["Approve"]},
        ),
        ("POST", "/api/v2/dags/conflict/dagRuns"): (409, {"detail": "run exists"}),
    }
    return routes.get((request.method, request.path), (500, {"detail": "boom"}))


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(_airflow) as server:
        yield server


def test_logs_in_once_and_sends_the_token(server: LoopbackServer) -> None:
    rest = AirflowRest(server.url, "admin", "secret")
    run = rest.trigger_run("d", {"rows": 5}, logical_date="2026-01-01T00:00:00+00:00")
    assert rest.run("d", run["dag_run_id"])["state"] == "running"

    login, trigger, read = server.take()
    assert (login.path, login.json) == ("/auth/token", {"username": "admin", "password": "secret"})
    assert trigger.json == {"logical_date": "2026-01-01T00:00:00+00:00", "conf": {"rows": 5}}
    assert read.path.endswith(QUOTED_RUN)  # a run id is one path segment
    assert trigger.headers["authorization"] == read.headers["authorization"] == "Bearer jwt"


def test_lists_only_unanswered_requests_and_answers_one(server: LoopbackServer) -> None:
    rest = AirflowRest(server.url, "admin", "secret")
    (waiting,) = rest.pending_hitl("d")
    assert rest.answer_hitl(waiting, "Approve") == {"chosen_options": ["Approve"]}
    answer = server.take()[-1]
    assert answer.method == "PATCH"
    assert answer.json == {"chosen_options": ["Approve"], "params_input": {}}


@pytest.mark.parametrize(
    ("call", "status"),
    [
        (lambda rest: rest.trigger_run("conflict"), 409),
        (lambda rest: rest.run("d", "unknown"), 500),
    ],
)
def test_errors_carry_status_and_body_and_are_not_retried(
    server: LoopbackServer, call: Any, status: int
) -> None:
    rest = AirflowRest(server.url, "admin", "secret")
    rest.login()
    server.take()
    with pytest.raises(ApiError) as raised:
        call(rest)
    assert raised.value.status == status
    assert '"detail"' in raised.value.body
    assert len(server.take()) == 1


def _drop_every_other_request(listening: socket.socket, lines: list[str]) -> None:
    """Answer the 1st, 3rd, ... connection; close the 2nd, 4th, ... unanswered, as a server
    does with a kept-alive connection it has just timed out."""
    body = json.dumps({"access_token": "jwt", "state": "running"}).encode()
    for number in range(1, 5):
        connection, _ = listening.accept()
        with connection:
            lines.append(connection.recv(65536).decode().split("\r\n")[0])
            if number % 2:
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


def test_a_dropped_connection_is_retried_for_a_get_only() -> None:
    lines: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listening:
        threading.Thread(
            target=_drop_every_other_request, args=(listening, lines), daemon=True
        ).start()
        rest = AirflowRest(f"http://127.0.0.1:{listening.getsockname()[1]}", "admin", "secret")
        assert rest.run("d", "r")["state"] == "running"  # log in; GET dropped, sent again
        with pytest.raises(requests.ConnectionError):
            rest.trigger_run("d")  # POST dropped: not sent again
    assert [line.split()[0] for line in lines] == ["POST", "GET", "GET", "POST"]


def _scripted(statuses: list[int]) -> Any:
    """A pools endpoint answering ``statuses`` in turn (then 201)."""
    answers = iter(statuses)

    def handle(request: Recorded) -> tuple[int, Any]:
        if request.path == "/auth/token":
            return 201, {"access_token": "jwt"}
        status = next(answers, 201)
        return status, {"detail": "Database error"} if status >= 400 else {"name": "p"}

    return handle


@pytest.mark.parametrize(
    ("statuses", "created", "posts"),
    [
        ([], True, 1),  # created at once
        ([409], False, 1),  # it existed before
        ([500, 500], True, 3),  # SQLite held by the scheduler: repeated, then created
        ([500, 409], True, 2),  # the attempt that looked failed did create it
    ],
)
def test_a_named_resource_is_created_once_through_server_errors(
    statuses: list[int], created: bool, posts: int
) -> None:
    with LoopbackServer(_scripted(statuses)) as server:
        rest = AirflowRest(server.url, "admin", "secret")
        assert rest.create("/api/v2/pools", {"name": "p", "slots": 1}) is created
        sent = [r for r in server.take() if r.path == "/api/v2/pools"]
    assert len(sent) == posts and all(r.json == {"name": "p", "slots": 1} for r in sent)


def test_a_client_error_is_not_repeated() -> None:
    with LoopbackServer(_scripted([400])) as server:
        rest = AirflowRest(server.url, "admin", "secret")
        with pytest.raises(ApiError) as raised:
            rest.create("/api/v2/pools", {"name": "p"})
        assert raised.value.status == 400
        assert len([r for r in server.take() if r.path == "/api/v2/pools"]) == 1
