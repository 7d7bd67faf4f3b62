"""What the lifecycle demo (scripts/lifecycle.py) runs: MLflow, Airflow's four components and the
model service on loopback, and the PID file through which a later run (or ``make down``) stops
them by their own PIDs. Also the names the story's modules share and how they print."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import airflow_settings
from demo_data import DemoData
from local_airflow import LiveAirflow
from mlflow_server import is_healthy, start_server
from mlops_steps.core.sections import for_model
from processes import alive, port_or_free, stop_process_groups, wait_for

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".mlops" / "lifecycle"
PIDS_FILE = STATE / "pids.json"
#: The distributed profile's databases and Redis prefix, for `make down` / the next run to drop.
DISTRIBUTED_FILE = STATE / "distributed.json"
# The demo's own models directory (MLOPS_MODELS_DIR of every process it starts): a copy of the
# contracts it starts with, plus the one it onboards, so the repository's models/ stays as is.
MODELS_DIR = STATE / "models"
# The model whose story is told (`make demo MODEL=<name>`; its contract in models/). Without a
# name, churn's story and then a second model onboarded from a real dataset (lifecycle_second.py).
NAMED_MODEL = os.environ.get("MLOPS_DEMO_MODEL", "").strip()
MODEL = NAMED_MODEL or "churn"
SECOND_MODEL = "" if NAMED_MODEL else "breast_cancer"
ACTS = 6 if SECOND_MODEL else 5  # the numbered stages the demo prints
TRAINING, DEPLOYMENT, MONITORING, ROLLBACK = (
    f"mlops_{kind}__{MODEL}" for kind in ("training", "deployment", "monitoring", "rollback")
)
DAG_IDS = {TRAINING, DEPLOYMENT, MONITORING, ROLLBACK}
USER = "admin"


def say(message: str = "", *, indent: int = 0) -> None:
    print(" " * indent + message, flush=True)


def stage(title: str, started: float) -> None:
    say(f"\n==> {title}  [{time.monotonic() - started:5.0f} s]")


def record_pids(pids: dict[str, int]) -> None:
    """Written after each start, so an interrupted start-up is stopped too."""
    PIDS_FILE.write_text(json.dumps(pids, indent=2))


@dataclass
class Stack:
    """The running demo: where each server answers, and the PIDs that stop them."""

    mlflow_url: str
    service_url: str
    airflow: LiveAirflow
    home: Path  # MLOPS_HOME: alerts (and, on the embedded default, the data below)
    pids: dict[str, int]
    # Where the pipeline keeps its data: partitions, reports and ledger, each model's prediction
    # log (MLOPS_PREDICTION_LOG's {model}: every model's service its own) and label landing place
    # (MLOPS_LABELS's {model}: where delayed outcomes arrive); model bundles.
    data: DemoData
    model_store: str  # with {model}
    service_env: dict[str, str] = field(default_factory=dict)  # e.g. the object store's endpoint
    on_stop: Callable[[], None] | None = None  # what stopping leaves besides processes

    def prediction_log(self, model: str) -> str:
        return for_model(self.data.prediction_log, model)

    def start_service(self, model: str, port: int, admin_token: str) -> str:
        """One service process serving ``model`` on ``port``, with its own model store and
        prediction log; returns its URL (the PID is recorded, so it stops with the rest)."""
        service_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))},
            **self.service_env,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "SERVING_MODEL_NAME": model,
            "SERVING_ADMIN_TOKEN": admin_token,
            "SERVING_MODEL_STORE": for_model(self.model_store, model),
            "SERVING_PREDICTION_LOG": self.prediction_log(model),
            "SERVING_PREDICTION_LOG_FLUSH_MS": "500",
        }
        name = "service" if model == MODEL else f"service-{model}"
        with (self.airflow.logs / f"{name}.log").open("ab") as out:
            service = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "mlops_serving.app:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                env=service_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pids[name] = service.pid
        record_pids(self.pids)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        stop_process_groups(self.pids.values())
        if self.on_stop is not None:
            self.on_stop()
        PIDS_FILE.unlink(missing_ok=True)
        DISTRIBUTED_FILE.unlink(missing_ok=True)


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
    if DISTRIBUTED_FILE.is_file():  # the distributed profile's databases and Redis keys
        from distributed_stack import remove_leftovers

        say("==> Dropping the previous run's databases and Redis keys")
        remove_leftovers(json.loads(DISTRIBUTED_FILE.read_text()))
        DISTRIBUTED_FILE.unlink()


def copy_models() -> Path:
    """The demo's models directory: the contracts of the models directory it was started with
    (models/, or MLOPS_MODELS_DIR); this process reads it too."""
    from mlops_steps.contract.loader import models_dir

    source = models_dir()
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    for contract in sorted(source.glob("*.yaml")):
        shutil.copy2(contract, MODELS_DIR / contract.name)
    os.environ["MLOPS_MODELS_DIR"] = str(MODELS_DIR)
    return MODELS_DIR


def start_stack(args: argparse.Namespace) -> Stack:
    """The embedded default (SQLite, LocalExecutor, local data), or the distributed profile."""
    models = copy_models()
    service_port = port_or_free(args.service_port)
    service_url = f"http://127.0.0.1:{service_port}"
    admin_token = secrets.token_urlsafe(24)
    airflow_port = port_or_free(args.airflow_port)
    env = demo_env(args, models, service_url, admin_token, airflow_port)
    if args.profile == "distributed":
        stack = start_distributed(args, env, airflow_port)
    else:
        stack = start_embedded(args, env, airflow_port)
    airflow = stack.airflow
    for line in airflow.python(
        f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); import airflow_settings as s;"
        " print('\\n'.join(s.apply(s.load())))"
    ).splitlines():
        say(line, indent=8)
    stack.service_url = stack.start_service(MODEL, service_port, admin_token)
    say(f"    model service on {service_url} (no champion yet: /ready says 503)")
    airflow.wait_until_up()
    wait_for("the model service", lambda: is_healthy(service_url), 120, airflow.logs)
    wait_for(
        "the DAG processor to parse dags/",
        lambda: airflow.rest.dag_ids() >= DAG_IDS,
        180,
        airflow.logs,
    )
    webhook = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "register_webhook.py"),
         "--mlflow-url", stack.mlflow_url, "--airflow-url", airflow.base_url],
        env=airflow.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if webhook.returncode != 0:
        raise RuntimeError(f"registering the MLflow webhook failed:\n{webhook.stderr}")
    say(f"    MLflow webhook -> Airflow: {webhook.stdout.strip()}")
    return stack


def start_embedded(args: argparse.Namespace, env: dict[str, str], airflow_port: int) -> Stack:
    """MLflow (SQLite, local artifacts), ``airflow standalone``'s components (SQLite,
    LocalExecutor), the data under MLOPS_HOME."""
    home = STATE / "mlops"
    mlflow_port = port_or_free(args.mlflow_port)
    say(f"    MLflow server on 127.0.0.1:{mlflow_port} (SQLite + local artifacts, webhooks on)")
    mlflow = start_server(STATE / "mlflow", mlflow_port)
    pids = {"mlflow": mlflow.pid}
    record_pids(pids)
    airflow = LiveAirflow.configure(
        STATE / "airflow",
        dags_folder=REPO / "dags",
        port=airflow_port,
        users={USER: "admin"},
        extra_env={
            **env,
            "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow.url,
            "MLOPS_HOME": str(home),
            # Each model's service writes its own log; monitoring reads the model's.
            "MLOPS_PREDICTION_LOG": str(home / "predictions" / "{model}"),
            # ...and its delayed labels land beside it, per model.
            "MLOPS_LABELS": str(home / "labels" / "{model}"),
        },
    )
    say(f"    Airflow on {airflow.base_url}: metadata database, airflow_settings.yaml")
    airflow.migrate()
    airflow.start()
    pids |= airflow.pids
    record_pids(pids)
    data = DemoData(str(home / "data"), str(home / "predictions" / "{model}"),
                    str(home / "labels" / "{model}"))  # fmt: skip
    model_store = str(home / "model-store" / "{model}")
    return Stack(mlflow.url, "", airflow, home, pids, data, model_store)


def start_distributed(args: argparse.Namespace, env: dict[str, str], airflow_port: int) -> Stack:
    """Airflow on PostgreSQL with the CeleryExecutor (Redis, two schedulers, two workers), MLflow
    on PostgreSQL with artifacts in an S3 bucket, the data plane in another (moto's server)."""
    from distributed_stack import DistributedStack

    say("    PostgreSQL and Redis of this machine (databases and keys of this run's own), moto S3")
    dist = DistributedStack.start(
        STATE / "distributed", users={USER: "admin"}, extra_env=env,
        airflow_port=airflow_port, mlflow_port=port_or_free(args.mlflow_port),
    )  # fmt: skip
    DISTRIBUTED_FILE.write_text(json.dumps(dist.leftovers()))
    pids = dict(dist.pids)
    record_pids(pids)
    say(f"    MLflow on {dist.mlflow.url} (PostgreSQL {dist.databases.names[1]}, artifacts "
        f"s3://{dist.artifact_bucket}/mlflow)")  # fmt: skip
    several = ", ".join(n for n in dist.airflow.pids if n.startswith(("scheduler", "worker")))
    say(f"    Airflow on {dist.airflow.base_url}: PostgreSQL {dist.airflow_database}, "
        f"CeleryExecutor (Redis, queue {dist.queue}), {several}")  # fmt: skip
    say(f"    data plane {dist.data_root}")
    plane = dist.env
    data = DemoData(plane["MLOPS_DATA_ROOT"], plane["MLOPS_PREDICTION_LOG"], plane["MLOPS_LABELS"])
    os.environ.update(dist.moto.env())  # this process reads the store too (DemoData)
    home = STATE / "distributed" / "mlops"
    return Stack(dist.mlflow.url, "", dist.airflow, home, pids, data, plane["MLOPS_MODEL_STORE"],
                 service_env=dist.moto.env(), on_stop=dist.stop)  # fmt: skip


def demo_env(
    args: argparse.Namespace, models: Path, service_url: str, admin_token: str, airflow_port: int
) -> dict[str, str]:
    """What every Airflow component of the demo is given, on either profile."""
    declared = airflow_settings.load()
    return {
        **declared.variables_env(),
        "MLOPS_MODELS_DIR": str(models),
        "MLOPS_RUNNER": "local",
        # The deployment-wide service (churn's): a model with its own serving connection
        # (mlops_serving__<model>, added with the model) is released to that one instead.
        "MLOPS_SERVICE_URL": service_url,
        # The release steps find the service's admin token where production keeps such
        # secrets: in an Airflow connection (its password), here given as AIRFLOW_CONN_*.
        "AIRFLOW_CONN_MLOPS_SERVING": json.dumps(
            {"conn_type": "http", "host": service_url, "password": admin_token}
        ),
        "MLOPS_WEBHOOK_SECRET": secrets.token_hex(32),
        # Report links (approval page, drift event, task logs) point at the API server's
        # reports route, behind the same login as the UI.
        "MLOPS_AIRFLOW_URL": f"http://127.0.0.1:{airflow_port}",
        # The story runs in order: no cron ticks, only the events and triggers below.
        "MLOPS_TRAINING_SCHEDULE": "off",
        "MLOPS_MONITORING_SCHEDULE": "off",
        # Deployment runs start only for new candidates (the webhook, else the registry
        # watcher): no reconciliation cron, no waiting runs (waiting_runs_fallback is off).
        # Seven processes share this machine's cores while the gate times predictions.
        "MLOPS_GATE_MAX_LATENCY_MS": str(args.max_latency_ms),
        # The demo's first release has no champion whose hold-out could judge it: it is
        # judged on its own hold-out, by choice (later releases replay the champion's).
        "MLOPS_ANALYSIS_FIRST_RELEASE": "candidate_holdout",
    }
