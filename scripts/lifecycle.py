"""The whole model lifecycle on the embedded default, for real, in one command (``make demo``).

1. Start a local MLflow server (SQLite, local artifacts, webhooks allowed on loopback), Airflow
   (API server, scheduler, DAG processor, triggerer: what ``airflow standalone`` starts) with
   ``airflow_settings.yaml`` applied, and the model service; MLflow's registry webhook points at
   Airflow's webhook bridge.
2. The training DAG trains and registers a challenger; the deployment DAG wakes from the registry
   event, waits for approval (given here through Airflow's REST API, as the UI's button does,
   after printing the UI link), builds the local bundle, runs the canary, analyses it, promotes.
3. A training run on drifted data produces a worse model: the gate rejects it, the champion keeps
   serving and the aliases do not move.
4. The drifted customers reach the service; the monitoring DAG sees the drift in what was served
   and emits the drift asset event, which retrains; the retrained version is approved and released.
5. A summary (versions, aliases, ledger, reports, UI URLs); then every process is stopped by its own
   PID, unless ``--keep-running`` (``make up``; ``make down`` stops it later).

All state lives under ``.mlops/lifecycle/`` and starts fresh on every run (a previous run's
processes, found by the PIDs it recorded, are stopped first), so re-running is safe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import airflow_settings
from local_airflow import ApiError, LiveAirflow
from mlflow_server import start_server
from processes import alive, port_or_free, stop_process_groups, wait_for

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".mlops" / "lifecycle"
PIDS_FILE = STATE / "pids.json"
MODEL = "churn"
TRAINING, DEPLOYMENT, MONITORING = "mlops_training", "mlops_deployment", "mlops_monitoring"
DAG_IDS = {TRAINING, DEPLOYMENT, MONITORING, "mlops_rollback"}
USER = "admin"
FINISHED = {"success", "failed"}
#: Seconds the approver "reads" the request before answering (see :func:`release`).
APPROVER_READING_S = 6.0
#: How long one DAG run may take here before the demo gives up (2 shared cores, cold imports).
RUN_TIMEOUT_S = 600.0


def say(message: str = "", *, indent: int = 0) -> None:
    print(" " * indent + message, flush=True)


def stage(title: str, started: float) -> None:
    say(f"\n==> {title}  [{time.monotonic() - started:5.0f} s]")


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    mlflow_url: str
    service_url: str
    airflow: LiveAirflow
    home: Path  # MLOPS_HOME: data partitions, model store, prediction log, alerts
    pids: dict[str, int]

    def record_pids(self) -> None:
        PIDS_FILE.write_text(json.dumps(self.pids, indent=2))

    def stop(self) -> None:
        stop_process_groups(self.pids.values())
        PIDS_FILE.unlink(missing_ok=True)


def stop_previous() -> None:
    """Stop what a previous run left running (``--keep-running``, or an interrupted run)."""
    if not PIDS_FILE.is_file():
        return
    pids = {name: int(pid) for name, pid in json.loads(PIDS_FILE.read_text()).items()}
    running = {name: pid for name, pid in pids.items() if alive(pid)}
    if running:
        say(f"==> Stopping the previous run's processes: {', '.join(running)}")
        stop_process_groups(running.values())
    PIDS_FILE.unlink()


def start_stack(args: argparse.Namespace) -> Stack:
    home = STATE / "mlops"
    mlflow_port = port_or_free(args.mlflow_port)
    say(f"    MLflow server on 127.0.0.1:{mlflow_port} (SQLite + local artifacts, webhooks on)")
    mlflow = start_server(STATE / "mlflow", mlflow_port)
    pids = {"mlflow": mlflow.pid}
    PIDS_FILE.write_text(json.dumps(pids))

    service_port = port_or_free(args.service_port)
    service_url = f"http://127.0.0.1:{service_port}"
    admin_token = secrets.token_urlsafe(24)
    declared = airflow_settings.load()
    airflow = LiveAirflow.configure(
        STATE / "airflow",
        dags_folder=REPO / "dags",
        port=port_or_free(args.airflow_port),
        users={USER: "admin"},
        extra_env={
            **declared.variables_env(),
            "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow.url,
            "MLOPS_HOME": str(home),
            "MLOPS_RUNNER": "local",
            "MLOPS_SERVICE_URL": service_url,
            # The release steps find the service's admin token where production keeps such
            # secrets: in an Airflow connection (its password), here given as AIRFLOW_CONN_*.
            "AIRFLOW_CONN_MLOPS_SERVING": json.dumps(
                {"conn_type": "http", "host": service_url, "password": admin_token}
            ),
            "MLOPS_WEBHOOK_SECRET": secrets.token_hex(32),
            # The story runs in order: no cron ticks, only the events and triggers below.
            "MLOPS_TRAINING_SCHEDULE": "off",
            "MLOPS_MONITORING_SCHEDULE": "off",
            "MLOPS_DEPLOYMENT_RECONCILE_SCHEDULE": "off",
            # A deployment run woken by a registry event that is not a new challenger (the
            # promotion moving `champion`) gives up after 2 minutes instead of 25.
            "MLOPS_CANDIDATE_WAIT_S": "120",
            # Seven processes share this machine's cores while the gate times predictions.
            "MLOPS_GATE_MAX_LATENCY_MS": str(args.max_latency_ms),
        },
    )
    say(f"    Airflow on {airflow.base_url}: metadata database, airflow_settings.yaml")
    airflow.migrate()
    for line in airflow.python(
        f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); import airflow_settings as s;"
        " print('\\n'.join(s.apply(s.load())))"
    ).splitlines():
        say(line, indent=8)
    airflow.start()
    pids |= airflow.pids
    PIDS_FILE.write_text(json.dumps(pids))
    service_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))},
        "MLFLOW_TRACKING_URI": mlflow.url,
        "SERVING_MODEL_NAME": MODEL,
        "SERVING_ADMIN_TOKEN": admin_token,
        "SERVING_MODEL_STORE": str(home / "model-store" / MODEL),
        "SERVING_PREDICTION_LOG": str(home / "predictions"),
        "SERVING_PREDICTION_LOG_FLUSH_MS": "500",
    }
    with (airflow.logs / "service.log").open("ab") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "mlops_serving.app:create_app",
             "--host", "127.0.0.1", "--port", str(service_port), "--no-access-log"],
            env=service_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    pids["service"] = service.pid
    stack = Stack(mlflow.url, service_url, airflow, home, pids)
    stack.record_pids()
    say(f"    model service on {service_url} (no champion yet: /ready says 503)")
    airflow.wait_until_up()
    wait_for("the model service", lambda: _get(f"{service_url}/health"), 120, airflow.logs)
    wait_for(
        "the DAG processor to parse dags/",
        lambda: {d["dag_id"] for d in airflow.api("GET", "/api/v2/dags")["dags"]} >= DAG_IDS,
        180,
        airflow.logs,
    )
    webhook = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "register_webhook.py"),
         "--mlflow-url", mlflow.url, "--airflow-url", airflow.base_url],
        env=airflow.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if webhook.returncode != 0:
        raise RuntimeError(f"registering the MLflow webhook failed:\n{webhook.stderr}")
    say(f"    MLflow webhook -> Airflow: {webhook.stdout.strip()}")
    return stack


# --- following DAG runs -----------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        return json.load(response)


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.load(response)


def trigger(stack: Stack, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
    logical_date = dt.datetime.now(dt.UTC).isoformat()
    body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf}
    stack.airflow.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
    say(f"triggered {dag_id} run {run_id} (conf {json.dumps(conf)})", indent=4)
    return run_id


def run_url(stack: Stack, dag_id: str, run_id: str) -> str:
    return f"{stack.airflow.base_url}/dags/{dag_id}/runs/{quote(run_id)}"


def follow(
    stack: Stack,
    dag_id: str,
    run_id: str,
    until: Callable[[dict[str, dict[str, Any]]], bool] | None = None,
) -> str:
    """Print each task's state changes until the run finishes (or ``until(tasks)`` holds);
    returns the run's state."""
    api, started = stack.airflow.api, time.monotonic()
    seen: dict[str, str] = {}
    base = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}"
    while time.monotonic() - started < RUN_TIMEOUT_S:
        tasks = {t["task_id"]: t for t in api("GET", f"{base}/taskInstances")["task_instances"]}
        for task_id, task in sorted(tasks.items(), key=lambda kv: kv[1].get("start_date") or "~"):
            state = task.get("state") or "none"
            if seen.get(task_id) != state and state not in {"none", "scheduled", "queued"}:
                seen[task_id] = state
                took = f" {task['duration']:.1f} s" if task.get("duration") else ""
                say(f"{task_id:<20} {state}{took}", indent=6)
        state = str(api("GET", base)["state"])
        if state in FINISHED or (until is not None and until(tasks)):
            return state
        time.sleep(1)
    raise TimeoutError(f"{dag_id} run {run_id} not finished after {RUN_TIMEOUT_S:.0f} s")


def newest_run(stack: Stack, dag_id: str, after: set[str]) -> dict[str, Any] | None:
    runs = stack.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after")
    fresh = [r for r in runs["dag_runs"] if r["dag_run_id"] not in after]
    return fresh[-1] if fresh else None


def run_ids(stack: Stack, dag_id: str) -> set[str]:
    runs = stack.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")
    return {r["dag_run_id"] for r in runs["dag_runs"]}


def woken_by(stack: Stack, dag_id: str, run_id: str) -> list[str]:
    """The asset events a run was created from (informational: never fails the demo).

    Airflow 3.3.2 answers 500 for this while any run created from those events has not started
    yet (its null start_date fails the response model), which is common here: a registry event
    can queue a second deployment run behind ``max_active_runs=1``. Retry briefly, then say so.
    """
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/upstreamAssetEvents"
    try:  # a 1-tuple: an empty list of events is an answer too
        (events,) = wait_for(
            "the run's asset events",
            lambda: (stack.airflow.api("GET", path)["asset_events"],),
            15,
            errors=(ApiError,),
        )
    except TimeoutError:
        return ["(not listed: Airflow answered an error for 15 s)"]
    return sorted({f"{e['uri']} (from {e.get('source_dag_id') or 'the webhook bridge'})"
                   for e in events})  # fmt: skip


def pending_approval(stack: Stack, version: str) -> dict[str, Any] | None:
    """The unanswered approval request for ``version``, from whichever run asks for it."""
    details = stack.airflow.api("GET", f"/api/v2/dags/{DEPLOYMENT}/dagRuns/~/hitlDetails")
    waiting = [
        d
        for d in details["hitl_details"]
        if not d.get("response_received") and re.search(rf"\bv{version}\b", d["subject"])
    ]
    return waiting[0] if waiting else None


def release(stack: Stack, version: str) -> str:
    """Follow the deployment run that picks up ``version``: approve it through the REST API as a
    person would in the UI, then follow it to the end. Returns the run id.

    The run is found by its approval request, not as "the newest run": a run woken earlier (by
    the previous promotion's alias event) that is still waiting for a candidate picks up a new
    challenger too, and while it runs ``max_active_runs=1`` keeps the new events' run queued.
    """
    detail = wait_for(
        f"a deployment run to ask for the approval of v{version}",
        lambda: pending_approval(stack, version),
        RUN_TIMEOUT_S,
        stack.airflow.logs,
    )
    run_id = detail["task_instance"]["dag_run_id"]
    say(f"deployment run {run_id} picked up v{version}; it woke on asset events:", indent=4)
    for event in woken_by(stack, DEPLOYMENT, run_id) or ["(none recorded)"]:
        say(f"- {event}", indent=6)
    ti = detail["task_instance"]
    say(f"approval requested: {detail['subject']}", indent=4)
    say(f"UI: {run_url(stack, DEPLOYMENT, ti['dag_run_id'])}/tasks/approve/required_actions",
        indent=6)  # fmt: skip
    # A person reads the request first. Answering within a second of the task parking itself
    # races Airflow 3.3.2's scheduler: the parked process's exit is then seen after the task was
    # already resumed, and the scheduler fails the task ("state changed externally").
    ti_path = f"/api/v2/dags/{DEPLOYMENT}/dagRuns/{quote(ti['dag_run_id'])}/taskInstances/approve"
    wait_for(
        "the approval task to park itself",
        lambda: stack.airflow.api("GET", ti_path)["state"] == "awaiting_input",
        60,
    )
    time.sleep(APPROVER_READING_S)
    path = (
        f"/api/v2/dags/{DEPLOYMENT}/dagRuns/{quote(ti['dag_run_id'])}/taskInstances/"
        f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
    )
    answer = stack.airflow.api(
        "PATCH", path, {"chosen_options": ["Approve"], "params_input": {}}, user=USER
    )
    say(f"approved by {answer['responded_by']['name']} through PATCH {path}", indent=4)
    state = follow(stack, DEPLOYMENT, ti["dag_run_id"])
    if state != "success":
        raise RuntimeError(f"the release of v{version} did not succeed ({state}); see the UI")
    return str(ti["dag_run_id"])


# --- the registry and the service ---------------------------------------------------------------


def registry(stack: Stack) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(aliases, versions with their tags), read from MLflow's REST API."""
    model = _get(f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/get?name={MODEL}")
    aliases = {a["alias"]: a["version"] for a in model["registered_model"].get("aliases", [])}
    found = _get(
        f"{stack.mlflow_url}/api/2.0/mlflow/model-versions/search?filter="
        + quote(f"name='{MODEL}'")
    )["model_versions"]
    versions = sorted(
        ({"version": v["version"], **{t["key"]: t["value"] for t in v.get("tags", [])}}
         for v in found),
        key=lambda v: int(v["version"]),
    )  # fmt: skip
    return aliases, versions


def serving(stack: Stack) -> str:
    ready = _get(f"{stack.service_url}/ready")
    canary = (
        f", canary v{ready['canary']} at {ready['canary_weight']:.0%}" if ready["canary"] else ""
    )
    return f"stable v{ready['stable']}{canary}"


def partition_results(stack: Stack, run_id: str, dag_id: str = TRAINING) -> Path:
    run = stack.airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")
    when = dt.datetime.fromisoformat(run["logical_date"] or run["run_after"])
    key = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return stack.home / "data" / MODEL / f"partition={key}" / "results"


def serve_drifted_customers(stack: Stack, results: Path, rows: int) -> int:
    """The drifted period's customers reach the service, 100 per /predict/batch request."""
    import pandas as pd

    from mlops_steps.contract.schema import FEATURE_NAMES, ID_COLUMN

    def logged() -> int:
        log_dir = stack.home / "predictions"
        return sum(len(p.read_bytes().splitlines()) for p in log_dir.rglob("*.jsonl"))

    frame = pd.read_parquet(results.parent / "data.parquet").head(rows)
    records = json.loads(frame.loc[:, list(FEATURE_NAMES)].to_json(orient="records"))
    ids = frame[ID_COLUMN].astype(str).tolist()
    before = logged()
    for start in range(0, len(records), 100):
        body = {"instances": records[start : start + 100], "entity_ids": ids[start : start + 100]}
        _post(f"{stack.service_url}/predict/batch", body)
    wait_for("the prediction log to be flushed", lambda: logged() >= before + len(records), 60)
    time.sleep(1)  # the monitoring window ends at its run's logical date: after the last row
    return len(records)


# --- the story ----------------------------------------------------------------------------------


def story(stack: Stack, started: float, args: argparse.Namespace) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    stage("2/5  Train, register a challenger, release it (approval, canary, promotion)", started)
    trained = trigger(stack, TRAINING, "demo_1_reference_data", {"rows": args.rows})
    if follow(stack, TRAINING, trained) != "success":
        raise RuntimeError(
            f"the first training run failed; see {run_url(stack, TRAINING, trained)}"
        )
    aliases, _ = registry(stack)
    first = aliases["challenger"]
    say(f"registered {MODEL} v{first} as @challenger", indent=4)
    facts["release_1"] = release(stack, first)
    aliases, _ = registry(stack)
    say(f"aliases {aliases}; the service: {serving(stack)}", indent=4)

    stage("3/5  Train on drifted data: a worse model the gate must stop", started)
    drifted = trigger(stack, TRAINING, "demo_2_drifted_data",
                      {"rows": args.rows, "drift": 0.8, "seed": 7})  # fmt: skip
    state = follow(stack, TRAINING, drifted)
    results = partition_results(stack, drifted)
    gate = (
        json.loads((results / "gate.json").read_text()) if (results / "gate.json").is_file() else {}
    )
    say(f"run {state}; gate: {gate.get('decision', '?')} ({gate.get('reason', 'see the UI')})",
        indent=4)  # fmt: skip
    after, _ = registry(stack)
    if state != "failed" or after != aliases:
        raise RuntimeError(f"the drifted model was not stopped: run {state}, aliases {after}")
    say(f"aliases unchanged {after}; the service: {serving(stack)}", indent=4)
    facts["drifted_run"], facts["gate"] = drifted, gate

    stage("4/5  Drifted customers reach the service; monitoring sees it and retrains", started)
    served = serve_drifted_customers(stack, results, args.traffic_rows)
    say(f"served {served} drifted customers through /predict/batch (prediction log flushed)",
        indent=4)  # fmt: skip
    trainings = run_ids(stack, TRAINING)
    monitored = trigger(stack, MONITORING, "demo_3_monitoring", {"window_hours": 1})
    if follow(stack, MONITORING, monitored) != "success":
        raise RuntimeError(f"monitoring failed; see {run_url(stack, MONITORING, monitored)}")
    verdict = latest_window(stack)
    facts["monitoring_report"] = verdict.get("dir", "(none written)")
    say(f"drifted columns: {', '.join(verdict.get('drifted_columns', [])) or 'none'}; "
        f"rows judged: {verdict.get('rows', {}).get('champion')}", indent=4)  # fmt: skip
    say(f"reports: {facts['monitoring_report']}", indent=4)
    if not verdict.get("drift_detected"):
        raise RuntimeError("monitoring saw no drift in the drifted traffic; see its task log")
    retrain = wait_for(
        "the drift event to start a training run",
        lambda: newest_run(stack, TRAINING, trainings),
        120,
        stack.airflow.logs,
    )
    retrain_id = retrain["dag_run_id"]
    say(f"retraining run {retrain_id} ({retrain['run_type']}), woken by:", indent=4)
    for event in woken_by(stack, TRAINING, retrain_id):
        say(f"- {event}", indent=6)
    if follow(stack, TRAINING, retrain_id) != "success":
        raise RuntimeError(f"retraining failed; see {run_url(stack, TRAINING, retrain_id)}")
    aliases, _ = registry(stack)
    retrained = aliases["challenger"]
    say(f"registered {MODEL} v{retrained} as @challenger", indent=4)
    facts["retrain"] = retrain_id
    facts["release_2"] = release(stack, retrained)
    return facts


def latest_window(stack: Stack) -> dict[str, Any]:
    """The newest monitored window's verdict (``monitoring.json``) and its directory."""
    windows = sorted((stack.home / "data" / "monitoring" / MODEL).glob("window=*"))
    if not windows or not (windows[-1] / "monitoring.json").is_file():
        return {}
    return {**json.loads((windows[-1] / "monitoring.json").read_text()), "dir": windows[-1]}


def summary(stack: Stack, facts: dict[str, Any], started: float) -> None:
    stage("5/5  Summary", started)
    aliases, versions = registry(stack)
    say(f"{'version':<8} {'aliases':<28} {'gate':<8} {'release':<10} partition", indent=4)
    for version in versions:
        names = ", ".join(sorted(a for a, v in aliases.items() if v == version["version"]))
        say(f"v{version['version']:<7} {names or '-':<28} "
            f"{version.get('mlops.gate.decision', '-'):<8} "
            f"{version.get('mlops.deploy.status', '-'):<10} {version.get('mlops.partition', '-')}",
            indent=4)  # fmt: skip
    gate = facts.get("gate", {})
    say(f"the drifted model was never registered: gate {gate.get('decision')} "
        f"({gate.get('reason')})", indent=4)  # fmt: skip
    say(f"the service now: {serving(stack)}", indent=4)
    ledger = stack.home / "data" / "ledger" / f"{MODEL}-deployments.jsonl"
    say("deployment ledger:", indent=4)
    for line in ledger.read_text().splitlines() if ledger.is_file() else []:
        entry = json.loads(line)
        say(f"- v{entry['version']} {entry['decision']} by {entry.get('approved_by')} "
            f"(run {entry.get('dag_run_id')})", indent=6)  # fmt: skip
    say("where to look:", indent=4)
    airflow = stack.airflow
    password_file = airflow.home / "simple_auth_manager_passwords.json.generated"
    for label, where in (
        ("Airflow UI", f"{airflow.base_url}  (user {USER}, password in {password_file})"),
        ("MLflow UI", stack.mlflow_url),
        ("service docs", f"{stack.service_url}/docs  (and /metrics, /model/info)"),
        ("drift report", facts.get("monitoring_report")),
        ("gate report", partition_results(stack, facts["drifted_run"]) / "gate.json"),
        ("ledger", ledger),
        ("alerts", stack.home / "alerts" / "alerts.jsonl"),
        ("process logs", airflow.logs),
    ):
        say(f"{label:<13} {where}", indent=6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave MLflow, Airflow and the service up to explore (make down)",
    )
    parser.add_argument("--stop", action="store_true", help="stop a kept-running stack and exit")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per training partition")
    parser.add_argument("--traffic-rows", type=int, default=2_000)
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=100.0,
        help="the gate's per-row p95 latency limit on this shared machine",
    )
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--service-port", type=int, default=8000)
    args = parser.parse_args(argv)  # fmt: skip

    STATE.mkdir(parents=True, exist_ok=True)
    stop_previous()
    if args.stop:
        say("==> Nothing left running")
        return 0
    for leftover in ("mlflow", "airflow", "mlops"):
        shutil.rmtree(STATE / leftover, ignore_errors=True)
    started = time.monotonic()
    stage("1/5  Start MLflow, Airflow and the model service (all on loopback)", started)
    try:
        stack = start_stack(args)
    except BaseException:
        stop_previous()  # whatever had started, by the PIDs recorded so far
        raise
    code = 1
    try:
        facts = story(stack, started, args)
        summary(stack, facts, started)
        code = 0
    except (RuntimeError, TimeoutError) as exc:
        say(f"\n!!  {exc}")
        say(f"    process logs: {stack.airflow.logs}")
    finally:
        if args.keep_running:
            say(f"\n==> Still running (PIDs in {PIDS_FILE}); stop everything with: make down")
        else:
            stack.stop()
            took = time.monotonic() - started
            say(f"\n==> Stopped MLflow, Airflow and the service  [{took:.0f} s]")
    return code


if __name__ == "__main__":
    sys.exit(main())
