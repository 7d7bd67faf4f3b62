"""The lifecycle demo's second model (``make demo`` without ``MODEL``): a real dataset onboarded in
the running Airflow, as a new user would, beside churn.

scikit-learn's breast cancer table (binary: 1 = benign) becomes a CSV; ``mlops-step contract
infer`` drafts its contract into the demo's models directory; a person's edit sets one hard limit;
``contract check`` validates it. The model gets its own service process (own port, admin token,
model store and prediction log), its own serving connection ``mlops_serving__<model>`` and
promotion pool (added through Airflow's REST API, as in the UI); the DAG processor's next parse
gives it its DAGs. Then its training DAG runs and its deployment DAG releases it (approval,
canary, analysis on its own hold-out, promotion); the service answers a request and refuses an
impossible value with 422.
"""

from __future__ import annotations

import difflib
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from lifecycle_report import format_metrics, registry, serving
from lifecycle_runs import follow, release, run_url, trigger
from lifecycle_stack import MODELS_DIR, STATE, Stack, say
from mlflow_server import is_healthy
from processes import free_port, wait_for

LABEL = "target"
#: The hard limit the "person" sets: a radius is never negative.
LIMITED_FEATURE = "mean radius"
IMPOSSIBLE_VALUE = -1.0


def write_dataset(name: str) -> Path:
    """scikit-learn's breast cancer table (no download: it ships inside the package) as a CSV."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    path = STATE / "datasets" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    say(f"wrote scikit-learn's breast cancer table to {path}: {len(frame)} rows, "
        f"{frame.shape[1] - 1} features, label {LABEL!r} (binary, 1 = benign)",
        indent=4)  # fmt: skip
    return path


def mlops_step(stack: Stack, *args: str) -> list[str]:
    """``mlops-step ARGS`` with the Airflow processes' environment (the demo's models dir); what
    it printed for a person (its stdout, then its notes on stderr, without the log line)."""
    command = [str(Path(sys.executable).parent / "mlops-step"), *args]
    done = subprocess.run(
        command, env=stack.airflow.env, capture_output=True, text=True, check=False, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"`mlops-step {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")
    notes = [line for line in done.stderr.splitlines() if " INFO mlops_steps: " not in line]
    return [*done.stdout.splitlines(), *notes]


def set_hard_limit(contract: Path) -> list[str]:
    """What a person does after ``infer``: settle the hard limit of one feature (the draft
    leaves every limit commented out with DECIDE). Returns the changed lines as a diff."""
    before = contract.read_text()
    lines = before.splitlines(keepends=True)
    at = lines.index(f"  - name: {LIMITED_FEATURE}\n")
    for i in range(at + 1, len(lines)):
        if lines[i].lstrip().startswith("# limits:"):
            lines[i] = "    limits: {min: 0.0, max: null}  # a radius is never negative\n"
            break
        if lines[i].startswith("  - name:"):
            raise RuntimeError(f"the drafted {contract} has no limits line for {LIMITED_FEATURE}")
    contract.write_text("".join(lines))
    diff = difflib.unified_diff(before.splitlines(), "".join(lines).splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in {"+++", "---"}]


def add_to_airflow(stack: Stack, name: str, service_url: str, token: str) -> None:
    """The model's serving connection (URL + admin token) and one-slot promotion pool, created
    through Airflow's REST API (what a person does in Admin > Connections / Pools)."""
    port = int(service_url.rsplit(":", 1)[1])
    stack.airflow.rest.create(
        "/api/v2/connections",
        {"connection_id": f"mlops_serving__{name}", "conn_type": "http", "schema": "http",
         "host": "127.0.0.1", "port": port, "password": token,
         "description": f"The {name} model service's admin API (password: its admin token)"},
    )  # fmt: skip
    stack.airflow.rest.create(
        "/api/v2/pools",
        {"name": f"mlops_promotion__{name}", "slots": 1, "include_deferred": False,
         "description": f"One release (or rollback) of model {name} at a time"},
    )  # fmt: skip
    say(f"Airflow: connection mlops_serving__{name} (http://127.0.0.1:{port}, password = its "
        f"admin token) and pool mlops_promotion__{name} (1 slot), through the REST API",
        indent=4)  # fmt: skip


def ask_service(service_url: str, csv: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One real row's answer, and the answer to the same row with an impossible value."""
    import pandas as pd

    row = pd.read_csv(csv).iloc[0]
    features = json.loads(row.drop(LABEL).to_json())
    answer = requests.post(
        f"{service_url}/predict", json={"features": features, "entity_id": "patient-0"}, timeout=30
    )
    answer.raise_for_status()
    served = {**answer.json(), "label": int(row[LABEL])}  # what the table says it is
    impossible = {**features, LIMITED_FEATURE: IMPOSSIBLE_VALUE}
    refused = requests.post(f"{service_url}/predict", json={"features": impossible}, timeout=30)
    if refused.status_code != 422:
        raise RuntimeError(
            f"{LIMITED_FEATURE}={IMPOSSIBLE_VALUE} was answered HTTP {refused.status_code}, "
            f"not 422: {refused.text[:300]}"
        )
    return served, {"status": refused.status_code, **refused.json()}


def second_model(stack: Stack, name: str) -> dict[str, Any]:
    """Onboard, train and release ``name`` from the breast cancer table; what the summary shows."""
    csv = write_dataset(name)
    inferred = mlops_step(
        stack, "contract", "infer", "--source", str(csv), "--label", LABEL,
        "--task", "binary", "--name", name,
    )  # fmt: skip
    contract = MODELS_DIR / f"{name}.yaml"
    say("`mlops-step contract infer`:", indent=4)
    for line in inferred:
        say(line, indent=6)
    say(f"a person edits it: the hard limit of {LIMITED_FEATURE!r}", indent=4)
    for line in set_hard_limit(contract):
        say(line, indent=6)
    say("`mlops-step contract check`:", indent=4)
    for line in mlops_step(stack, "contract", "check", name):
        say(line, indent=6)

    token = secrets.token_urlsafe(24)
    service_url = stack.start_service(name, free_port(), token)
    wait_for(f"the {name} service", lambda: is_healthy(service_url), 120, stack.airflow.logs)
    say(f"{name} service on {service_url} (its own admin token; prediction log "
        f"{stack.prediction_log(name)})", indent=4)  # fmt: skip
    add_to_airflow(stack, name, service_url, token)
    dag_ids = {f"mlops_{kind}__{name}" for kind in ("training", "deployment", "monitoring",
                                                     "rollback")}  # fmt: skip
    wait_for(
        f"the DAG processor to build {name}'s DAGs from its contract",
        lambda: stack.airflow.rest.dag_ids() >= dag_ids,
        240,
        stack.airflow.logs,
    )
    say(f"the DAG processor's next parse built {', '.join(sorted(dag_ids))}", indent=4)

    training, deployment = f"mlops_training__{name}", f"mlops_deployment__{name}"
    run_id = trigger(stack, training, f"demo_5_{name}", {})
    if follow(stack, training, run_id) != "success":
        raise RuntimeError(f"{name}'s training run failed; see {run_url(stack, training, run_id)}")
    aliases, _ = registry(stack, name)
    version = aliases["challenger"]
    say(f"registered {name} v{version} as @challenger", indent=4)
    release_run = release(stack, version, deployment)
    aliases, versions = registry(stack, name)
    tags = next(v for v in versions if v["version"] == version)
    metrics = {
        key.removeprefix("mlops.holdout_"): float(value)
        for key, value in sorted(tags.items())
        if key.startswith("mlops.holdout_")
    }
    answer, refused = ask_service(service_url, csv)
    facts = {
        "model": name,
        "version": version,
        "aliases": aliases,
        "metrics": metrics,
        "serving": serving(stack, service_url),
        "service_url": service_url,
        "answer": answer,
        "refused": refused,
        "release_run": release_run,
        "contract": str(contract),
        "dataset": str(csv),
    }
    say(f"aliases {aliases}; the {name} service: {facts['serving']}", indent=4)
    say(f"hold-out metrics: {format_metrics(metrics)}", indent=4)
    say(f"POST /predict, the table's first row (label {answer.pop('label')}; the score is "
        f"P({LABEL} == 1)): {json.dumps(answer)}", indent=4)  # fmt: skip
    say(f"POST /predict with {LIMITED_FEATURE}={IMPOSSIBLE_VALUE}: HTTP {refused['status']}",
        indent=4)  # fmt: skip
    return facts
