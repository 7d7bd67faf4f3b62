"""What the lifecycle demo reads back to tell what happened: the registry's aliases and versions
(MLflow's REST API), what the model service serves, the files the DAG runs wrote; and the
summary printed at the end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from lifecycle_stack import ACTS, MODEL, TRAINING, USER, Stack, say, stage
from mlops_steps.core.report_links import url_for_report


def _get(url: str) -> Any:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def registry(stack: Stack, model: str = MODEL) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(aliases, versions with their tags) of ``model``, read from MLflow's REST API."""
    found_model = _get(f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/get?name={model}")
    aliases = {a["alias"]: a["version"] for a in found_model["registered_model"].get("aliases", [])}
    found = _get(
        f"{stack.mlflow_url}/api/2.0/mlflow/model-versions/search?filter="
        + quote(f"name='{model}'")
    )["model_versions"]
    versions = sorted(
        ({"version": v["version"], **{t["key"]: t["value"] for t in v.get("tags", [])}}
         for v in found),
        key=lambda v: int(v["version"]),
    )  # fmt: skip
    return aliases, versions


def serving(stack: Stack, service_url: str = "") -> str:
    ready = _get(f"{service_url or stack.service_url}/ready")
    canary = (
        f", canary v{ready['canary']} at {ready['canary_weight']:.0%}" if ready["canary"] else ""
    )
    return f"stable v{ready['stable']}{canary}"


def partition_dir(stack: Stack, run_id: str, dag_id: str = TRAINING) -> tuple[str, str]:
    """The run's partition under the data root: (model, ``partition=<key>``)."""
    run = stack.airflow.rest.run(dag_id, run_id)
    when = dt.datetime.fromisoformat(run["logical_date"] or run["run_after"])
    key = when.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return MODEL, f"partition={key}"


def latest_window(stack: Stack) -> dict[str, Any]:
    """The newest monitored window's verdict (``monitoring.json``) and where it is."""
    windows = [w for w in stack.data.children("monitoring", MODEL) if w.startswith("window=")]
    verdict = (
        stack.data.read_json("monitoring", MODEL, windows[-1], "monitoring.json") if windows else {}
    )
    return {**verdict, "dir": stack.data.uri("monitoring", MODEL, windows[-1])} if verdict else {}


def web_link(stack: Stack, path: str | Path | None) -> str | None:
    """A report's URL on the demo's Airflow (its reports route, behind the UI's login), else
    the path and why it has none."""
    if not path:
        return None
    root = stack.data.data_root
    plane = root if stack.data.on_object_store else ""
    url = url_for_report(path, data_root=Path(root), airflow_url=stack.airflow.base_url,
                         data_plane=plane)  # fmt: skip
    return url or f"{path} (no report file there: no link)"


def release_reports(stack: Stack, version: dict[str, Any]) -> list[tuple[str, str | None]]:
    """What an approver of ``version`` opened: its partition's Data Docs, gate and shift
    reports, and its canary analysis."""
    partition = (MODEL, f"partition={version.get('mlops.partition')}")
    analysis = stack.data.uri("deployments", MODEL, f"v{version['version']}", "analysis.json")
    docs = stack.data.uri(*partition, "validation", "data_docs", "index.html")
    return [
        ("Data Docs", web_link(stack, docs)),
        ("gate report", web_link(stack, stack.data.uri(*partition, "results", "gate.json"))),
        ("shift report", web_link(stack, version.get("mlops.shift.report"))),
        ("canary", web_link(stack, analysis)),
    ]


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()) or "(none tagged)"


def second_model_summary(second: dict[str, Any]) -> None:
    """The model onboarded from a real dataset (scripts/lifecycle_second.py)."""
    name, answer = second["model"], second["answer"]
    say(f"second model {name} (from {second['dataset']}; contract {second['contract']}):",
        indent=4)  # fmt: skip
    say(f"v{second['version']} {', '.join(sorted(second['aliases']))}; its service "
        f"{second['service_url']}: {second['serving']}", indent=6)  # fmt: skip
    say(f"hold-out: {format_metrics(second['metrics'])}", indent=6)
    say(f"served: score {answer.get('score')} (variant {answer.get('variant')}, "
        f"v{answer.get('model_version')}); an impossible value: HTTP "
        f"{second['refused']['status']}", indent=6)  # fmt: skip


def summary(stack: Stack, facts: dict[str, Any], started: float) -> None:
    stage(f"{ACTS}/{ACTS}  Summary", started)
    aliases, versions = registry(stack)
    say(f"{'version':<8} {'aliases':<28} {'gate':<8} {'release':<10} partition", indent=4)
    for version in versions:
        names = ", ".join(sorted(a for a, v in aliases.items() if v == version["version"]))
        say(f"v{version['version']:<7} {names or '-':<28} "
            f"{version.get('mlops.gate.decision', '-'):<8} "
            f"{version.get('mlops.deploy.status', '-'):<10} {version.get('mlops.partition', '-')}",
            indent=4)  # fmt: skip
    stopped = facts.get("stopped")
    if stopped:
        say(f"the drifted data never became a model version: stopped by {stopped.get('step')} "
            f"({stopped.get('reason')})", indent=4)  # fmt: skip
    feedback = facts.get("feedback")
    if feedback:
        recent = feedback["recent"]
        low, high = recent["ci"]
        say(f"the loop closed: on the drifted hold-out ({recent['rows']} served, labelled rows) "
            f"{feedback['metric']} v{feedback['retrained']} {recent['retrained']:.4f} vs "
            f"v{feedback['champion']} {recent['champion']:.4f}: +{feedback['margin']:.4f} "
            f"(95% CI {low:+.4f} .. {high:+.4f})", indent=4)  # fmt: skip
    say(f"the service now: {serving(stack)}", indent=4)
    if facts.get("second"):
        second_model_summary(facts["second"])
    ledger = stack.data.uri(
        "ledger", f"{MODEL}-deployments" + ("" if stack.data.on_object_store else ".jsonl")
    )
    say("deployment ledger:", indent=4)
    for entry in stack.data.ledger(MODEL):
        if entry.get("kind") == "traffic_step":
            verdict = "passed" if entry["passed"] else "failed"
            say(f"- v{entry['version']} step {entry['step']} ({entry['label']}) {verdict}",
                indent=6)  # fmt: skip
            continue
        say(f"- v{entry['version']} {entry['decision']} by {entry.get('approved_by')} "
            f"(run {entry.get('dag_run_id')})", indent=6)  # fmt: skip
    say("where to look:", indent=4)
    airflow = stack.airflow
    password_file = airflow.home / "simple_auth_manager_passwords.json.generated"
    window = facts.get("monitoring_report")
    drift_report = f"{window}/data_drift.html" if window and "(none" not in str(window) else None
    for label, where in (
        ("Airflow UI", f"{airflow.base_url}  (user {USER}, password in {password_file})"),
        ("MLflow UI", stack.mlflow_url),
        ("service docs", f"{stack.service_url}/docs  (and /metrics, /model/info)"),
        ("drift report", web_link(stack, drift_report) or window),
        ("why stopped", web_link(stack, (facts.get("stopped") or {}).get("report"))),
        ("ledger", ledger),
        ("alerts", stack.home / "alerts" / "alerts.jsonl"),
        ("process logs", airflow.logs),
    ):
        say(f"{label:<13} {where}", indent=6)
    champion = next((v for v in versions if v["version"] == aliases.get("champion")), None)
    if champion is not None:
        say(f"reports of the champion v{champion['version']} (log in to the Airflow UI first; "
            "the links need its session):", indent=6)  # fmt: skip
        for label, where in release_reports(stack, champion):
            if where:
                say(f"{label:<13} {where}", indent=8)
