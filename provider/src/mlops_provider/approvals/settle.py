"""Hold an answer to a human-in-the-loop request until the waiting task has settled.

Airflow 3.3.2 fails a HITL task whose request is answered within about a second of the task
parking itself in ``awaiting_input``: the answer resumes the task (``scheduled``) before the
scheduler has processed the parked worker's exit, and the scheduler then fails it ("finished with
state success, but the task instance's state attribute is queued"; the deferral race of
apache/airflow#67287, fixed on main by #68741 but not released, and #72716). Nothing on the
task's side can prevent it: the API's response handler resumes the task itself.

So the API server holds such answers back, as an ASGI middleware in front of Airflow's own routes
(an ``AirflowPlugin``'s ``fastapi_root_middlewares``): an answer, ``PATCH
/api/v2/dags/<dag>/dagRuns/<run>/taskInstances/<task>/<map index>/hitlDetails`` (what the UI's
buttons and every REST client send), waits until the task has been parked for
``settle_s`` seconds -- or, answered before the task parked, until it parks and then settles --
and is then handed to Airflow unchanged, which validates, authorises and stores it. The wait is
bounded (``max_wait_s``); a request for anything else, or a task in any other state, passes at
once. An automated approver answering the moment the request appears then works; a person never
notices a few seconds.

Written by hand: Airflow offers no hook between "response received" and "task resumed".
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]  # (scope, receive, send): Starlette's shape

#: Airflow's public route for answering a request (the UI's buttons call the same).
HITL_ANSWER_PATH = re.compile(
    r"^/api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/(?P<run_id>[^/]+)/taskInstances/"
    r"(?P<task_id>[^/]+)/(?P<map_index>-?\d+)/hitlDetails/?$"
)
_PARKED, _ON_THE_WAY = "awaiting_input", {"scheduled", "queued", "running", "restarting"}
_RECHECK_S = 0.25


def parked_for(dag_id: str, run_id: str, task_id: str, map_index: int) -> tuple[str | None, float]:
    """The task instance's state and, when parked, for how many seconds (its ``updated_at``
    moves on every state change and not while it waits)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.execute(
            select(TaskInstance.state, TaskInstance.updated_at).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index == map_index,
            )
        ).first()
    if row is None:
        return None, 0.0
    state, updated_at = row
    state = str(state.value if hasattr(state, "value") else state) if state else None
    if state != _PARKED or updated_at is None:
        return state, 0.0
    return state, max(0.0, (datetime.now(UTC) - updated_at).total_seconds())


class HitlSettleMiddleware:
    """Hold an answer (``PATCH .../hitlDetails``) until its task has been parked ``settle_s``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settle_s: float = 5.0,
        max_wait_s: float = 60.0,
        state_of: Callable[[str, str, str, int], tuple[str | None, float]] = parked_for,
    ) -> None:
        self.app, self.settle_s, self.max_wait_s, self.state_of = (
            app,
            settle_s,
            max_wait_s,
            state_of,
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "PATCH" and self.settle_s > 0:
            match = HITL_ANSWER_PATH.match(scope.get("path", ""))
            if match:
                await self._settle(match)
        await self.app(scope, receive, send)

    async def _settle(self, match: re.Match[str]) -> None:
        import anyio

        key = (
            match["dag_id"],
            match["run_id"],
            match["task_id"],
            int(match["map_index"]),
        )
        deadline = time.monotonic() + self.max_wait_s
        while time.monotonic() < deadline:
            state, parked_s = await anyio.to_thread.run_sync(self.state_of, *key)
            if state == _PARKED:
                if parked_s < self.settle_s:
                    log.info("Holding the answer to %s until it has been parked %.0f s",
                             "/".join(map(str, key)), self.settle_s)  # fmt: skip
                    await anyio.sleep(self.settle_s - parked_s)
                return
            if state not in _ON_THE_WAY:  # unknown, deferred, finished: Airflow decides
                return
            await anyio.sleep(_RECHECK_S)  # answered before the task parked: wait for it
        log.warning("Answer to %s passed on after %.0f s: the task never parked",
                    "/".join(map(str, key)), self.max_wait_s)  # fmt: skip
