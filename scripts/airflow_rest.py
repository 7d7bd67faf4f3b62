"""The one client of Airflow's REST API (``/api/v2``) here: the lifecycle demo, the live-Airflow
harness (scripts/local_airflow.py) and the tests that answer approvals all use it.

It logs in as a SimpleAuthManager user (``POST /auth/token`` -> JWT) and holds the calls those
callers make: trigger a run, read runs and task instances, list and answer human-in-the-loop
requests, list the asset events a run was created from. Anything else goes through
:meth:`AirflowRest.get` / :meth:`~AirflowRest.post` / :meth:`~AirflowRest.patch`.

One ``requests.Session`` keeps connections to the API server alive. A GET is retried when the
connection breaks under it (a kept-alive socket the server has just closed); no call is retried
on an HTTP status (callers that expect a passing error, such as the 500 of
``upstreamAssetEvents`` while a run is queued, poll with ``processes.wait_for``), and POST and
PATCH never are (a trigger or an answer sent twice is not the same request).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

#: Reads retried on a broken connection only: never on connect errors (a server that is not up
#: yet is the caller's to wait for) nor on a status.
_READ_RETRY = Retry(
    total=2, connect=0, read=2, status=0, other=0, allowed_methods={"GET"}, backoff_factor=0.2
)


class ApiError(RuntimeError):
    """A REST call answered with an error status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:500]}")
        self.status = status
        self.body = body


def _run_path(dag_id: str, run_id: str) -> str:
    """The run's resource; its id quoted as one path segment (run ids hold ``:`` and ``+``)."""
    return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"


def hitl_path(ti: dict[str, Any]) -> str:
    """Where the human-in-the-loop request of task instance ``ti`` (as the API lists it) is
    answered."""
    return (
        f"{_run_path(ti['dag_id'], ti['dag_run_id'])}/taskInstances/"
        f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
    )


class AirflowRest:
    """A session with one Airflow API server as ``username`` (logs in on first use)."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._timeout = timeout
        self._session = requests.Session()
        self._session.mount("http://", HTTPAdapter(max_retries=_READ_RETRY))

    def login(self) -> str:
        """Fetch a JWT and send it from now on; returns it (also the server's readiness check)."""
        credentials = {"username": self._username, "password": self._password}
        token = str(self._send("POST", "/auth/token", credentials)["access_token"])
        self._session.headers["Authorization"] = f"Bearer {token}"
        return token

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self._call("PATCH", path, body)

    def create(self, path: str, body: dict[str, Any], *, timeout: float = 60) -> bool:
        """POST a resource that carries its own name (a pool, a connection, a run with its
        ``dag_run_id``); True if this call created it, False if it existed before (409). Because
        the name makes a repeat harmless, a 5xx is retried until ``timeout``: Airflow 3.3.2 on
        SQLite answers 500 "Database error" to writes while the scheduler holds the database
        (a 409 after such a 5xx means the failed-looking attempt did create it)."""
        deadline = time.monotonic() + timeout
        retried = False
        while True:
            try:
                self.post(path, body)
                return True
            except ApiError as error:
                if error.status == 409:
                    return retried
                if error.status < 500 or time.monotonic() > deadline:
                    raise
            retried = True
            time.sleep(1.0)

    def _call(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        if "Authorization" not in self._session.headers:
            self.login()
        return self._send(method, path, body, params)

    def _send(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        url = self.base_url + path
        response = self._session.request(
            method, url, json=body, params=params, timeout=self._timeout
        )
        if not response.ok:
            raise ApiError(method, url, response.status_code, response.text)
        return response.json() if response.content else None

    # --- the calls the demo and the tests make ------------------------------------------------

    def dag_ids(self) -> set[str]:
        """The DAGs the DAG processor has stored (the first page: this project has a handful)."""
        return {d["dag_id"] for d in self.get("/api/v2/dags")["dags"]}

    def trigger_run(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        logical_date: str | None = None,
    ) -> dict[str, Any]:
        """A new run of ``dag_id`` (``run_id`` chosen by Airflow unless given); the run. With a
        ``run_id`` the request is repeated on a 5xx (see :meth:`create`); an existing run of
        that id is an error (409), as a new run was asked for."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        path = f"/api/v2/dags/{dag_id}/dagRuns"
        if run_id is None:
            return dict(self.post(path, body))
        body["dag_run_id"] = run_id
        if not self.create(path, body):
            raise ApiError("POST", self.base_url + path, 409, f"run {run_id} exists already")
        return self.run(dag_id, run_id)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(_run_path(dag_id, run_id)))

    def runs(self, dag_id: str, order_by: str | None = None) -> list[dict[str, Any]]:
        params = {} if order_by is None else {"order_by": order_by}
        return list(self.get(f"/api/v2/dags/{dag_id}/dagRuns", **params)["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"{_run_path(dag_id, run_id)}/taskInstances")["task_instances"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.get(f"{_run_path(dag_id, run_id)}/taskInstances/{task_id}"))

    def pending_hitl(self, dag_id: str) -> list[dict[str, Any]]:
        """The unanswered human-in-the-loop requests of ``dag_id``, over all its runs."""
        details = self.get(f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails")["hitl_details"]
        return [d for d in details if not d.get("response_received")]

    def answer_hitl(self, detail: dict[str, Any], option: str) -> dict[str, Any]:
        """Choose ``option`` for the request ``detail`` as this user; Airflow's record of it."""
        body = {"chosen_options": [option], "params_input": {}}
        return dict(self.patch(hitl_path(detail["task_instance"]), body))

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events ``run_id`` was created from."""
        path = f"{_run_path(dag_id, run_id)}/upstreamAssetEvents"
        return list(self.get(path)["asset_events"])
