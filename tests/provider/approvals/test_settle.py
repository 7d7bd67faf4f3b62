"""HitlSettleMiddleware: which requests it holds, how long, and that it hands them on unchanged.
The live stack (tests/e2e/test_faults_live.py, the demo) answers approvals at once through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mlops_provider.approvals.settle import HITL_ANSWER_PATH, HitlSettleMiddleware
from mlops_steps.core.sections import DeploySettings

# As the API server sees it: the run id percent-decoded (clients quote ":" and "+").
RUN_ID = "manual__2026-11-30T18:00:00+00:00"
ANSWER = (
    f"/api/v2/dags/mlops_deployment__churn/dagRuns/{RUN_ID}/taskInstances/approve/-1/hitlDetails"
)
MAPPED = ANSWER.replace("/-1/", "/3/")


class Downstream:
    """Airflow's app behind the middleware: records what reached it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


def _run(middleware: HitlSettleMiddleware, method: str, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}"}

    async def send(message: Any) -> None:
        pass

    anyio.run(middleware, {"type": "http", "method": method, "path": path}, receive, send)


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(round(seconds, 3))

    monkeypatch.setattr(anyio, "sleep", record)
    return waits


def test_the_answer_path_is_airflows_own_route() -> None:
    """The PATCH route of Airflow's API, read from its router (not a copy of its text)."""
    from airflow.api_fastapi.core_api.routes.public.hitl import task_instances_hitl_router
    from fastapi.routing import APIRoute

    routes = [r for r in task_instances_hitl_router.routes if isinstance(r, APIRoute)]
    (route,) = [r for r in routes if "PATCH" in r.methods]
    assert route.path == (
        "/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/{map_index}/hitlDetails"
    )
    match = HITL_ANSWER_PATH.match(ANSWER)
    assert match and (match["dag_id"], match["run_id"]) == ("mlops_deployment__churn", RUN_ID)
    assert (match["task_id"], match["map_index"]) == ("approve", "-1")
    assert HITL_ANSWER_PATH.match(MAPPED)["map_index"] == "3"  # type: ignore[index]
    assert HITL_ANSWER_PATH.match(ANSWER + "/tries/1") is None  # a read, not an answer
    assert HITL_ANSWER_PATH.match("/api/v2/dags/x/dagRuns/~/hitlDetails") is None


def test_an_answer_to_a_just_parked_task_waits_out_the_rest_of_the_settle(
    slept: list[float],
) -> None:
    asked: list[tuple[str, str, str, int]] = []

    def state_of(*key: Any) -> tuple[str | None, float]:
        asked.append(key)
        return "awaiting_input", 1.5

    app = Downstream()
    _run(HitlSettleMiddleware(app, settle_s=5.0, state_of=state_of), "PATCH", ANSWER)
    assert asked == [
        ("mlops_deployment__churn", "manual__2026-11-30T18:00:00+00:00", "approve", -1)
    ]
    assert slept == [3.5]
    assert [s["path"] for s in app.scopes] == [ANSWER]  # handed on unchanged


def test_an_answer_before_the_task_parked_waits_for_the_park_then_settles(
    slept: list[float],
) -> None:
    states = iter([("running", 0.0), ("running", 0.0), ("awaiting_input", 0.0)])
    app = Downstream()
    middleware = HitlSettleMiddleware(app, settle_s=5.0, state_of=lambda *_: next(states))
    _run(middleware, "PATCH", MAPPED)
    assert slept == [0.25, 0.25, 5.0]
    assert len(app.scopes) == 1


@pytest.mark.parametrize("state", ["success", "failed", "deferred", None])
def test_a_task_in_any_other_state_is_left_to_airflow_at_once(
    slept: list[float], state: str | None
) -> None:
    app = Downstream()
    _run(HitlSettleMiddleware(app, state_of=lambda *_: (state, 0.0)), "PATCH", ANSWER)
    assert slept == [] and len(app.scopes) == 1


def test_a_settled_task_and_every_other_request_pass_untouched(slept: list[float]) -> None:
    def no_lookup(*_: Any) -> tuple[str | None, float]:
        raise AssertionError("only an answer to a request is looked up")

    app = Downstream()
    for method, path in (("GET", ANSWER), ("PATCH", "/api/v2/dags/x"), ("POST", ANSWER)):
        _run(HitlSettleMiddleware(app, state_of=no_lookup), method, path)
    _run(HitlSettleMiddleware(app, settle_s=0, state_of=no_lookup), "PATCH", ANSWER)  # off
    _run(HitlSettleMiddleware(app, state_of=lambda *_: ("awaiting_input", 9.0)), "PATCH", ANSWER)
    assert slept == [] and len(app.scopes) == 5


def test_a_task_that_never_parks_is_passed_on_after_the_bound() -> None:
    looked: list[str] = []

    def queued(*_: Any) -> tuple[str | None, float]:
        looked.append("queued")
        return "queued", 0.0

    app = Downstream()
    _run(HitlSettleMiddleware(app, max_wait_s=0.6, state_of=queued), "PATCH", ANSWER)
    assert len(app.scopes) == 1 and 2 <= len(looked) <= 4  # rechecked every 0.25 s, then on


def test_the_plugin_puts_it_in_front_of_airflows_api(airflow_db: Path) -> None:
    """Airflow's own API app, built with this project's plugins/, runs the middleware with the
    configured settle (the live suite then answers approvals at once: test_faults_live.py)."""
    from airflow.api_fastapi.app import create_app

    app = create_app("core")
    (found,) = [m for m in app.user_middleware if m.cls is HitlSettleMiddleware]  # type: ignore[comparison-overlap]
    assert found.kwargs == {"settle_s": DeploySettings.approval_settle_s}
