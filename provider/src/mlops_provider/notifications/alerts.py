"""The alert record and the links in it, built from whatever context the caller has.

A task callback has the full task context (``ti`` knows its log URL); a deadline callback in
the triggerer only gets the DAG run as the REST API shows it. Both end up as the same
:class:`Alert`, so every channel formats one shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

#: A task failed for good (its retries are used up).
TASK_FAILED = "task_failed"
#: A human-in-the-loop task started waiting for an answer.
APPROVAL_WAITING = "approval_waiting"
#: A DAG run was not finished by one of its DeadlineAlerts.
DEADLINE_MISSED = "deadline_missed"

_TITLES = {
    TASK_FAILED: "Task failed",
    APPROVAL_WAITING: "Approval needed",
    DEADLINE_MISSED: "Deadline missed",
}
_MAX_ERROR_CHARS = 500


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Alert:
    """One event, as every channel sends it. ``record()`` is the JSON the file and the generic
    webhook get; Slack and email get a text rendering of the same fields."""

    kind: str
    dag_id: str
    run_id: str | None
    message: str
    task_id: str | None = None
    try_number: int | None = None
    log_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=_now)
    alert_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def title(self) -> str:
        where = f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id
        return f"{_TITLES.get(self.kind, self.kind)}: {where}"

    def record(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "try": self.try_number,
            "log_url": self.log_url,
            "message": self.message,
            "time": self.time,
            "details": self.details,
        }

    def text(self) -> str:
        """Plain text for people (email body, Slack message)."""
        lines = [self.title, "", self.message, ""]
        lines += [f"DAG: {self.dag_id}", f"Run: {self.run_id}"]
        if self.task_id:
            lines.append(f"Task: {self.task_id} (try {self.try_number})")
        if self.log_url:
            lines.append(f"Log: {self.log_url}")
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        lines.append(f"Time: {self.time}")
        return "\n".join(lines)


# -- links -------------------------------------------------------------------------------------


def ui_base_url() -> str:
    """``[api] base_url``, as the task SDK uses it for ``ti.log_url``."""
    from airflow.sdk.configuration import conf

    return str(conf.get("api", "base_url", fallback="http://localhost:8080/")).rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{ui_base_url()}/dags/{quote(dag_id)}/runs/{quote(run_id)}"


def task_url(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    mapped = f"/mapped/{map_index}" if map_index is not None and map_index >= 0 else ""
    return f"{run_url(dag_id, run_id)}/tasks/{quote(task_id)}{mapped}"


def required_actions_url(
    dag_id: str, run_id: str, task_id: str, map_index: int | None = None
) -> str:
    """The UI page where a person answers a human-in-the-loop task (the task's Required Actions
    tab, the link the UI's own Required Actions list uses)."""
    return f"{task_url(dag_id, run_id, task_id, map_index)}/required_actions"


# -- builders ----------------------------------------------------------------------------------


def _error_summary(error: Any) -> str:
    if error is None:
        return "no error recorded (failed outside the task, or marked failed)"
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    summary = f"{type(error).__name__}: {first}" if isinstance(error, BaseException) else first
    return summary[:_MAX_ERROR_CHARS]


def task_alert(context: Mapping[str, Any], kind: str, message: str = "") -> Alert:
    """An alert about the task in ``context`` (a failure callback's or an operator's)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?"))
    run_id = getattr(ti, "run_id", None) or context.get("run_id")
    task_id = getattr(ti, "task_id", None)
    map_index = getattr(ti, "map_index", None)
    try_number = getattr(ti, "try_number", None)
    log_url = getattr(ti, "log_url", None)
    if not log_url and run_id and task_id:
        log_url = task_url(dag_id, str(run_id), str(task_id), map_index)
    details: dict[str, Any] = {}
    if kind == TASK_FAILED:
        error = _error_summary(context.get("exception"))
        details["error"] = error
        message = message or f"{task_id} failed on try {try_number}: {error}"
    elif kind == APPROVAL_WAITING and run_id and task_id:
        task = context.get("task")
        link = required_actions_url(dag_id, str(run_id), str(task_id), map_index)
        details["required_actions_url"] = link
        timeout = getattr(task, "response_timeout", None)
        if timeout:
            details["response_timeout"] = str(timeout)
        subject = getattr(task, "subject", "") or f"{task_id} waits for an answer"
        message = message or (
            f"{subject} Answer at {link}"
            + (f" within {timeout} (then the default answer applies)." if timeout else ".")
        )
    return Alert(
        kind=kind,
        dag_id=dag_id,
        run_id=str(run_id) if run_id else None,
        task_id=str(task_id) if task_id else None,
        try_number=int(try_number) if try_number is not None else None,
        log_url=log_url,
        message=message or kind,
        details=details,
    )


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def deadline_alert(
    context: Mapping[str, Any] | None,
    *,
    deadline: str,
    message: str = "",
    action_task_id: str | None = None,
) -> Alert | None:
    """An alert for a missed deadline, or ``None`` when the run had already ended by then.

    Airflow deletes a run's deadlines only when it succeeds in time; a run that failed before
    its deadline still "misses" it later. That failure was already reported by the task's
    failure callback, so it is not reported twice.
    """
    context = context or {}
    run = dict(context.get("dag_run") or {})
    deadline_info = dict(context.get("deadline") or {})
    dag_id = str(run.get("dag_id") or "?")
    run_id = run.get("dag_run_id") or run.get("run_id")
    state = run.get("state")
    due = _parse_time(deadline_info.get("deadline_time"))
    ended = _parse_time(run.get("end_date"))
    if ended is not None and due is not None and ended <= due:
        return None
    queued = _parse_time(run.get("queued_at"))
    details: dict[str, Any] = {"deadline": deadline, "deadline_time": due and due.isoformat()}
    details["run_state"] = state
    if queued is not None and due is not None:
        details["allowed"] = str(due - queued)
    link = run_url(dag_id, str(run_id)) if run_id else None
    if action_task_id and run_id:
        details["required_actions_url"] = required_actions_url(dag_id, str(run_id), action_task_id)
    allowed = f" within {details['allowed']} of being queued" if "allowed" in details else ""
    text = f"{dag_id} run {run_id} did not finish{allowed} (state: {state})."
    return Alert(
        kind=DEADLINE_MISSED,
        dag_id=dag_id,
        run_id=str(run_id) if run_id else None,
        log_url=link,
        message=f"{text} {message}".strip(),
        details=details,
    )
