"""Driving and following DAG runs of the lifecycle demo through Airflow's REST API: trigger a run,
print its tasks' state changes, list what woke it, and approve a release as a person would."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any
from urllib.parse import quote

from airflow_rest import ApiError, hitl_path
from lifecycle_stack import DEPLOYMENT, Stack, say
from processes import wait_for

FINISHED = {"success", "failed"}
#: How long one DAG run may take here before the demo gives up (2 shared cores, cold imports).
RUN_TIMEOUT_S = 600.0


def trigger(stack: Stack, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
    logical_date = dt.datetime.now(dt.UTC).isoformat()
    stack.airflow.rest.trigger_run(dag_id, conf, run_id=run_id, logical_date=logical_date)
    say(f"triggered {dag_id} run {run_id} (conf {json.dumps(conf)})", indent=4)
    return run_id


def run_url(stack: Stack, dag_id: str, run_id: str) -> str:
    return f"{stack.airflow.base_url}/dags/{dag_id}/runs/{quote(run_id)}"


def follow(stack: Stack, dag_id: str, run_id: str) -> str:
    """Print each task's state changes until the run finishes; returns the run's state."""
    rest, started = stack.airflow.rest, time.monotonic()
    seen: dict[str, str] = {}
    while time.monotonic() - started < RUN_TIMEOUT_S:
        tasks = {t["task_id"]: t for t in rest.task_instances(dag_id, run_id)}
        for task_id, task in sorted(tasks.items(), key=lambda kv: kv[1].get("start_date") or "~"):
            state = task.get("state") or "none"
            if seen.get(task_id) != state and state not in {"none", "scheduled", "queued"}:
                seen[task_id] = state
                took = f" {task['duration']:.1f} s" if task.get("duration") else ""
                say(f"{task_id:<20} {state}{took}", indent=6)
        state = str(rest.run(dag_id, run_id)["state"])
        if state in FINISHED:
            return state
        time.sleep(1)
    raise TimeoutError(f"{dag_id} run {run_id} not finished after {RUN_TIMEOUT_S:.0f} s")


def newest_run(stack: Stack, dag_id: str, after: set[str]) -> dict[str, Any] | None:
    runs = stack.airflow.rest.runs(dag_id, order_by="-run_after")
    fresh = [r for r in runs if r["dag_run_id"] not in after]
    return fresh[-1] if fresh else None


def run_ids(stack: Stack, dag_id: str) -> set[str]:
    return {r["dag_run_id"] for r in stack.airflow.rest.runs(dag_id)}


def woken_by(stack: Stack, dag_id: str, run_id: str) -> list[str]:
    """The asset events a run was created from (informational: never fails the demo).

    Airflow 3.3.2 answers 500 for this while any run created from those events has not started
    yet (its null start_date fails the response model), which is common here: a registry event
    can queue a second deployment run behind ``max_active_runs=1``. Retry briefly, then say so.
    """
    try:  # a 1-tuple: an empty list of events is an answer too
        (events,) = wait_for(
            "the run's asset events",
            lambda: (stack.airflow.rest.upstream_asset_events(dag_id, run_id),),
            15,
            errors=(ApiError,),
        )
    except TimeoutError:
        return ["(not listed: Airflow answered an error for 15 s)"]
    return sorted({f"{e['uri']} (from {e.get('source_dag_id') or 'the webhook bridge'})"
                   for e in events})  # fmt: skip


def pending_approval(stack: Stack, version: str, dag_id: str = DEPLOYMENT) -> dict[str, Any] | None:
    """The unanswered approval request for ``version``, from whichever run asks for it."""
    waiting = [
        d
        for d in stack.airflow.rest.pending_hitl(dag_id)
        if re.search(rf"\bv{version}\b", d["subject"])
    ]
    return waiting[0] if waiting else None


def release(stack: Stack, version: str, dag_id: str = DEPLOYMENT) -> str:
    """Follow the deployment run (of ``dag_id``: the model's deployment DAG) that picks up
    ``version``: approve it through the REST API as a person would in the UI, then follow it to
    the end. Returns the run id.

    The run is found by its approval request, not as "the newest run": a run woken earlier (by
    the previous promotion's alias event) that is still waiting for a candidate picks up a new
    challenger too, and while it runs ``max_active_runs=1`` keeps the new events' run queued.
    """
    rest = stack.airflow.rest
    detail = wait_for(
        f"a deployment run to ask for the approval of v{version}",
        lambda: pending_approval(stack, version, dag_id),
        RUN_TIMEOUT_S,
        stack.airflow.logs,
    )
    ti = detail["task_instance"]
    run_id = ti["dag_run_id"]
    say(f"deployment run {run_id} picked up v{version}; it woke on asset events:", indent=4)
    for event in woken_by(stack, dag_id, run_id) or ["(none recorded)"]:
        say(f"- {event}", indent=6)
    say(f"approval requested: {detail['subject']}", indent=4)
    say(f"UI: {run_url(stack, dag_id, run_id)}/tasks/approve/required_actions", indent=6)
    # Answered at once, as an automated approver would: Airflow 3.3.2 fails a task answered
    # within a second of parking itself (apache/airflow#67287), so the API server holds the
    # answer until the task has settled (plugins/mlops_approvals_plugin.py).
    answer = rest.answer_hitl(detail, "Approve")
    say(f"approved by {answer['responded_by']['name']} through PATCH {hitl_path(ti)}", indent=4)
    state = follow(stack, dag_id, run_id)
    show_traffic_steps(stack, dag_id.removeprefix("mlops_deployment__"), str(run_id))
    if state != "success":
        raise RuntimeError(f"the release of v{version} did not succeed ({state}); see the UI")
    return str(run_id)


def show_traffic_steps(stack: Stack, model: str, run_id: str) -> None:
    """The run's judged traffic steps, as the ledger recorded them (release/progressive.py)."""
    lines = stack.data.ledger(model)
    steps = [e for e in lines if e.get("kind") == "traffic_step" and e.get("dag_run_id") == run_id]
    for step in steps:
        verdict = "passed" if step["passed"] else f"FAILED ({', '.join(step['failed_checks'])})"
        say(f"step {step['step']}: {step['label']}: {verdict} after "
            f"{step.get('rounds_completed')} analysis rounds", indent=6)  # fmt: skip
    if steps and all(step["passed"] for step in steps):
        say("then 100 %: promoted", indent=6)
