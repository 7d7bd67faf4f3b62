"""The live stack of the fault suite (tests/e2e/test_faults_live.py), started once per module.

Airflow's four components (scripts/local_airflow.py) run this project's own DAGs for a model of
their own (``faults``), against one MLflow server and one model service on loopback:

* versions are copies of one version trained once by the real steps (cheap, and each copy gets
  the tags a scenario needs, e.g. which champion it was evaluated against);
* the release steps reach the service through a loopback proxy (tests/loopback_proxy.py) that can
  withhold the answers to predictions on purpose;
* MLflow's registry webhook is signed with the secret the bridge plugin knows, but delivered to a
  recorder, never to Airflow: every delivery is "lost", and a test may replay a recorded one,
  byte for byte, to the bridge;
* the deployment DAG starts from its release-candidate asset: a delivered webhook or, the
  delivery being lost, the asset's registry watcher in the triggerer (polling every
  :data:`REGISTRY_POLL_S`; a candidate is claimed on its second sighting); no cron, no waiting
  runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

import airflow_settings
from airflow_rest import ApiError
from local_airflow import REPO, LiveAirflow
from mlops_steps.contract.loader import MODELS_DIR_ENV
from processes import free_port, stop_process_groups, wait_for
from register_webhook import register
from tests.alert_receivers import HttpReceiver, HttpRequest, http_receiver
from tests.fixtures.contracts import churn_contracts
from tests.loopback_proxy import Proxy, reverse_proxy
from tests.pipeline import train_and_register
from tests.service_process import Service

MODEL = "faults"
TEMPLATE = "faults_template"
ADMIN_TOKEN = "faults-admin-token-" + secrets.token_hex(8)
TRAINING, DEPLOYMENT = f"mlops_training__{MODEL}", f"mlops_deployment__{MODEL}"
DAG_IDS = {TRAINING, DEPLOYMENT, f"mlops_monitoring__{MODEL}", f"mlops_rollback__{MODEL}"}
FINISHED = {"success", "failed"}
WEBHOOK_NAME = "faults-live-recorder"
#: The watcher's poll interval (DeploySettings.registry_poll_interval_s, the default).
REGISTRY_POLL_S = 20.0
CANDIDATE_ASSET = f"mlops://{MODEL}/release-candidate"
#: Release Params that keep a run short: two rounds, no pause, half the traffic to the canary.
FAST_RELEASE = {
    "require_approval": False,
    "canary_steps": "50,100",
    "analysis_rounds": 2,
    "requests_per_round": 100,
    "round_interval_s": 0,
}


@dataclass
class Stack:
    airflow: LiveAirflow
    client: MlflowClient
    home: Path  # MLOPS_HOME of the stack: data partitions, ledger, model store
    template_home: Path
    service: Service
    proxy: Proxy
    deliveries: HttpReceiver  # where MLflow's webhook deliveries go (and stay)
    secret: str

    @property
    def rest(self) -> Any:
        return self.airflow.rest

    @property
    def logs(self) -> Path:
        return self.airflow.logs

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        return wait_for(what, check, timeout, self.logs, errors=(OSError, ApiError))

    # -- registry, traffic, ledger -------------------------------------------------------------

    def prepare(self, *, compared_to: str | None) -> str:
        """A new version of ``faults``: a copy of the trained template with its tags, evaluated
        against champion ``compared_to`` (the tag the release's resolve step checks).

        Each copy gets the template's data under a partition key of its own: the canary
        analysis replays the champion's hold-out and refuses a candidate's own partition.
        """
        source = self.client.get_model_version(TEMPLATE, "1")
        copy = self.client.copy_model_version(f"models:/{TEMPLATE}/1", MODEL)
        partition = f"copy-{copy.version}"
        shutil.copytree(
            self.template_home / "data" / TEMPLATE / f"partition={source.tags['mlops.partition']}",
            self.home / "data" / MODEL / f"partition={partition}",
        )
        tags = {**source.tags, "mlops.partition": partition}
        for key, value in tags.items():
            if key != "mlops.compared_to_champion":
                self.client.set_model_version_tag(MODEL, copy.version, key, value)
        if compared_to is not None:
            self.client.set_model_version_tag(
                MODEL, copy.version, "mlops.compared_to_champion", compared_to
            )
        return str(copy.version)

    def aliases(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(MODEL).aliases)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(MODEL, version).tags)

    def traffic(self) -> dict[str, Any]:
        ready = httpx.get(f"{self.service.url}/ready", timeout=30).json()
        return {k: ready.get(k) for k in ("stable", "canary", "canary_weight")}

    def ledger(self, kind: str = "decision") -> list[dict[str, Any]]:
        """The audit ledger's decisions (or its traffic steps), as the release steps wrote it."""
        path = self.home / "data" / "ledger" / f"{MODEL}-deployments.jsonl"
        lines = path.read_text().splitlines() if path.is_file() else []
        entries = [json.loads(line) for line in lines if line.strip()]
        return [e for e in entries if e.get("kind", "decision") == kind]

    # -- Airflow -------------------------------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any], **kwargs: Any) -> str:
        """A new run, named here so a 5xx can be repeated (see ``AirflowRest.create``)."""
        run_id = kwargs.pop("run_id", None) or f"faults__{secrets.token_hex(6)}"
        return str(self.rest.trigger_run(dag_id, conf, run_id=run_id, **kwargs)["dag_run_id"])

    def finish(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it finished (success or failed); fails after ``timeout`` seconds."""
        return dict(
            self.wait(
                f"{dag_id} run {run_id} to finish",
                lambda: (run := self.rest.run(dag_id, run_id))["state"] in FINISHED and run,
                timeout,
            )
        )

    def states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {t["task_id"]: t["state"] for t in self.rest.task_instances(dag_id, run_id)}

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        path = (
            self.airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
            / f"task_id={task_id}" / f"attempt={attempt}.log"
        )  # fmt: skip
        return path.read_text(errors="replace") if path.is_file() else ""

    def approval_requests(self, version: str) -> list[dict[str, Any]]:
        """Every approval request (answered or not) that names ``version``."""
        details = self.rest.get(f"/api/v2/dags/{DEPLOYMENT}/dagRuns/~/hitlDetails")
        return [d for d in details["hitl_details"] if re.search(rf"\bv{version}\b", d["subject"])]

    def approve(self, version: str, timeout: float) -> str:
        """Approve the release of ``version`` the moment a deployment run asks, as an automated
        approver would (the API server holds the answer until the task has settled:
        mlops_provider/approvals/settle.py); returns that run's id."""
        detail = self.wait(
            f"a deployment run to ask for the approval of v{version}",
            lambda: [d for d in self.approval_requests(version) if not d["response_received"]],
            timeout,
        )[0]
        self.rest.answer_hitl(detail, "Approve")
        return str(detail["task_instance"]["dag_run_id"])

    def candidate_events(self) -> list[dict[str, Any]]:
        """The release-candidate asset's events (webhook or watcher), oldest first."""
        (asset,) = self.rest.get("/api/v2/assets", uri_pattern=CANDIDATE_ASSET)["assets"]
        events = self.rest.get("/api/v2/assets/events", asset_id=asset["id"], limit=100)
        return sorted(events["asset_events"], key=lambda e: e["id"])

    def restart_triggerer(self) -> None:
        """Stop the triggerer (SIGTERM to its process group) and start a new one."""
        stop_process_groups([self.airflow.pids.pop("triggerer")], 30)
        self.airflow.start(("triggerer",))

    def registry_deliveries(self, event: str, version: str) -> list[HttpRequest]:
        """MLflow's webhook deliveries of ``event`` (e.g. ``model_version_alias.created``) for
        version ``version`` of ``faults``, as the recorder received them."""
        entity, action = event.rsplit(".", 1)
        found = []
        for request in list(self.deliveries.requests):
            payload = request.json()
            data = payload.get("data") or {}
            if (
                (payload.get("entity"), payload.get("action")) == (entity, action)
                and data.get("name") == MODEL
                and str(data.get("version")) == version
            ):
                found.append(request)
        return found


def _train_template(mlflow_url: str, home: Path) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        env.setenv("MLOPS_HOME", str(home))
        env.delenv("MLOPS_DATA_ROOT", raising=False)
        env.setenv("MLOPS_MODEL_NAME", TEMPLATE)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{TEMPLATE}")
        env.setenv(MODELS_DIR_ENV, str(churn_contracts(home / "models", TEMPLATE)))
        train_and_register("template", "--seed", "1", gate_args=["--max-latency-ms", "500"])


def _airflow_env(mlflow_url: str, home: Path, proxy: Proxy, secret: str) -> dict[str, str]:
    return {
        **airflow_settings.load().variables_env(),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_url,
        "MLOPS_HOME": str(home),
        "MLOPS_RUNNER": "local",
        "MLOPS_MODEL_NAME": MODEL,
        "MLOPS_EXPERIMENT": f"exp-{MODEL}",
        # The stack's one model: the DAG factory builds the four DAGs of exactly this contract.
        MODELS_DIR_ENV: str(churn_contracts(home / "models", MODEL)),
        "MLOPS_SERVICE_URL": proxy.url,
        "AIRFLOW_CONN_MLOPS_SERVING": json.dumps(
            {"conn_type": "http", "host": proxy.url, "password": ADMIN_TOKEN}
        ),
        "MLOPS_WEBHOOK_SECRET": secret,
        "MLOPS_TRAINING_SCHEDULE": "off",
        "MLOPS_MONITORING_SCHEDULE": "off",
        # Runs the scheduler starts (the cron, asset events) use the defaults: half the replayed
        # traffic to the canary keeps its per-round count well above the analysis's minimum.
        "MLOPS_CANARY_STEPS": "50,100",
        # Seven processes share two cores while the gate times predictions.
        "MLOPS_GATE_MAX_LATENCY_MS": "500",
    }


def start_stack(
    mlflow_server: str,
    service_starter: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The module fixture (tests/e2e/test_faults_live.py registers it): the stack, then stopped."""
    root = tmp_path_factory.mktemp("faults-live")
    home, template_home = root / "mlops", root / "template"
    secret = secrets.token_hex(32)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    # The service's proxy must exist before Airflow's environment names it; its upstream is set
    # once the service runs (after the champion exists, which it loads at start-up).
    with http_receiver() as deliveries, reverse_proxy("http://127.0.0.1:1") as proxy:
        airflow = LiveAirflow.configure(
            root / "airflow",
            dags_folder=REPO / "dags",
            port=free_port(),
            users={"admin": "admin"},
            base_env=base_env,
            extra_env=_airflow_env(mlflow_server, home, proxy, secret),
        )
        migrated: list[BaseException | None] = []

        def migrate() -> None:
            try:
                airflow.migrate()
                migrated.append(None)
            except BaseException as err:  # re-raised in the fixture's thread below
                migrated.append(err)

        migration = threading.Thread(target=migrate, daemon=True)
        migration.start()
        _train_template(mlflow_server, template_home)
        migration.join(timeout=600)
        if not migrated or migrated[0] is not None:
            raise RuntimeError(f"airflow db migrate failed: {migrated}")
        try:
            airflow.start()
            client = MlflowClient(mlflow_server)
            stack = _populate(airflow, client, home, template_home, deliveries, proxy, secret)
            service = service_starter(
                mlflow_server,
                model_name=MODEL,
                admin_token=ADMIN_TOKEN,
                SERVING_MODEL_STORE=str(home / "model-store" / MODEL),
            )
            proxy.upstream = service.url.rstrip("/")
            stack.service = service
            _ready(stack, mlflow_server)
            yield stack
        finally:
            airflow.stop()
            _unregister(mlflow_server)


def _populate(  # noqa: PLR0917
    airflow: LiveAirflow,
    client: MlflowClient,
    home: Path,
    template_home: Path,
    deliveries: HttpReceiver,
    proxy: Proxy,
    secret: str,
) -> Stack:
    """``faults`` v1 as champion; the webhook is not registered yet (no delivery for it)."""
    stack = Stack(airflow, client, home, template_home, None, proxy, deliveries, secret)  # type: ignore[arg-type]
    client.set_registered_model_alias(MODEL, "champion", stack.prepare(compared_to=None))
    return stack


def _ready(stack: Stack, mlflow_url: str) -> None:
    """The API server answers, the promotion pool exists, the DAGs are parsed, and MLflow's
    webhook (to the recorder) is registered with the bridge's secret."""
    airflow = stack.airflow
    airflow.wait_until_up(180)
    pool = {"name": f"mlops_promotion__{MODEL}", "slots": 1, "description": "one release at a time"}
    airflow.rest.create("/api/v2/pools", pool)
    stack.wait("the DAG processor to parse dags/", lambda: airflow.rest.dag_ids() >= DAG_IDS, 180)
    register(
        mlflow_url=mlflow_url,
        airflow_url=stack.deliveries.url,
        secret=stack.secret,
        name=WEBHOOK_NAME,
    )


def _unregister(mlflow_url: str) -> None:
    """MLflow's webhooks are server-wide: other tests on the session's server must not keep
    delivering to a recorder that is gone."""
    client = MlflowClient(mlflow_url)
    for webhook in client.list_webhooks(max_results=100):
        if webhook.name == WEBHOOK_NAME:
            client.delete_webhook(webhook.webhook_id)
