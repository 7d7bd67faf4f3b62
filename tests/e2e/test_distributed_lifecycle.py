"""The lifecycle on the distributed profile, live (scripts/distributed_stack.py): this project's
own DAGs on Airflow with PostgreSQL, the CeleryExecutor (Redis, two workers, two schedulers),
MLflow on PostgreSQL with S3 artifacts, and the data plane in an S3 bucket (moto's server); the
model service loads its bundles from the store and logs predictions there.

One training run survives four faults, in order: the object store stops answering while
``ingest`` commits (the workers reach it through a loopback proxy that withholds the manifest's
put), the worker running ``train`` is killed with one of the two schedulers, and PostgreSQL is
restarted between two tasks. Then the version is released (approval, bundle, canary, promotion)
and the served traffic is monitored, all through the store.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running: the stack fails at once,
naming the one that is down and the command that starts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import requests
from mlflow import MlflowClient

import airflow_settings
from airflow_rest import ApiError
from distributed_stack import DistributedStack, restart_postgres
from local_airflow import REPO
from processes import free_port, log_tails, stop_process_groups, wait_for
from tests.loopback_proxy import Proxy, reverse_proxy

pytestmark = pytest.mark.e2e

MODEL = "churn"
TRAINING, DEPLOYMENT, MONITORING = (
    f"mlops_{kind}__{MODEL}" for kind in ("training", "deployment", "monitoring")
)
LOGICAL_DATE = "2026-11-02T00:00:00+00:00"
PARTITION = "20261102T000000"
RUN_TIMEOUT_S = 600.0


@dataclass
class Live:
    dist: DistributedStack
    proxy: Proxy  # how the Airflow components reach the store
    service_url: str
    client: MlflowClient

    @property
    def rest(self) -> Any:
        return self.dist.airflow.rest

    @property
    def bucket(self) -> str:
        return self.dist.data_bucket

    def keys(self, prefix: str) -> list[str]:
        return self.dist.moto.list_keys(self.bucket, prefix)

    def object(self, key: str) -> bytes:
        return bytes(self.dist.moto.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def wait(self, what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT_S) -> Any:
        return wait_for(what, check, timeout, self.dist.airflow.logs, errors=(ApiError,))

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        return list(self.rest.get(path)["task_instances"])

    def state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self.rest.task_instance(dag_id, run_id, task_id).get("state")

    def finish(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(
            self.wait(
                f"{dag_id} {run_id} to finish",
                lambda: (
                    (r := self.rest.run(dag_id, run_id))["state"] in {"success", "failed"} and r
                ),
            )
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("distributed")
    models = home / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / f"{MODEL}.yaml", models)
    service_port, admin_token = free_port(), "distributed-admin-token"
    service_url = f"http://127.0.0.1:{service_port}"
    with reverse_proxy("http://127.0.0.1:1") as proxy:  # its upstream: the store, once started
        env = {
            **airflow_settings.load().variables_env(),
            "MLOPS_MODELS_DIR": str(models),
            "MLOPS_TRAINING_SCHEDULE": "off",
            "MLOPS_MONITORING_SCHEDULE": "off",
            "MLOPS_REGISTRY_POLL_INTERVAL_S": "3",  # no webhook here: the watcher finds v1
            "MLOPS_SERVICE_URL": service_url,
            "AIRFLOW_CONN_MLOPS_SERVING": json.dumps(
                {"conn_type": "http", "host": service_url, "password": admin_token}
            ),
            "MLOPS_GATE_MAX_LATENCY_MS": "250",  # eleven processes share two cores
            "MLOPS_ANALYSIS_FIRST_RELEASE": "candidate_holdout",
            "AWS_ENDPOINT_URL": proxy.url,  # the steps' way to the store
        }
        dist = DistributedStack.start(home, extra_env=env)
        proxy.upstream = dist.moto.url
        service = None
        try:
            dist.airflow.python(
                f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r});"
                " import airflow_settings as s; s.apply(s.load())"
            )
            service = _start_service(dist, service_port, admin_token)
            live = Live(dist, proxy, service_url, MlflowClient(dist.mlflow.url))
            dag_ids = {TRAINING, DEPLOYMENT, MONITORING}
            live.wait("the DAG processor to parse dags/", lambda: dag_ids <= live.rest.dag_ids())
            yield live
        finally:
            if service is not None:
                stop_process_groups([service.pid])
            dist.stop()
    assert dist.databases.existing() == [], "the stack's databases outlived it"
    assert dist.redis.find() == [], "the stack's Redis keys outlived it"


def _start_service(dist: DistributedStack, port: int, admin_token: str) -> subprocess.Popen[bytes]:
    """The model service, its bundles and prediction log in the store (the env's templates)."""
    plane = {k: v.replace("{model}", MODEL) for k, v in dist.env.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    env |= {
        **dist.moto.env(),
        "MLFLOW_TRACKING_URI": dist.mlflow.url,
        "SERVING_MODEL_NAME": MODEL,
        "SERVING_ADMIN_TOKEN": admin_token,
        "SERVING_MODEL_STORE": plane["MLOPS_MODEL_STORE"],
        "SERVING_PREDICTION_LOG": plane["MLOPS_PREDICTION_LOG"],
        "SERVING_PREDICTION_LOG_FLUSH_MS": "500",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "mlops_serving.app:create_app",
               "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    with (dist.airflow.logs / "service.log").open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _partition_intact(live: Live) -> dict[str, Any]:
    """The committed partition: its data object matches the manifest's sha256."""
    import hashlib

    base = f"pipeline/{MODEL}/partition={PARTITION}"
    manifest = json.loads(live.object(f"{base}/manifest.json"))
    assert (
        hashlib.sha256(live.object(f"{base}/data.parquet")).hexdigest() == manifest["file_sha256"]
    )
    return manifest


def test_training_survives_a_store_outage_a_dead_worker_and_scheduler_and_a_postgres_restart(
    live: Live,
) -> None:
    base = f"pipeline/{MODEL}/partition={PARTITION}"
    # The store goes away mid-commit: the manifest's put (its key as botocore quotes it).
    live.proxy.withhold = quote(f"/{live.bucket}/{base}/manifest.json", safe="/~")
    run_id = "distributed_faults"
    live.rest.trigger_run(TRAINING, {"rows": 20000}, run_id=run_id, logical_date=LOGICAL_DATE)

    # 1. The store stops answering while ingest commits: the attempt fails (retryably), its data
    #    object is in the store without a manifest, and nothing downstream starts.
    live.wait("ingest's first attempt to fail",
              lambda: live.state(TRAINING, run_id, "ingest") == "up_for_retry")  # fmt: skip
    assert live.proxy.withheld >= 1
    assert sorted(live.keys(base)) == [f"{base}/data.parquet"]  # data, but no commit marker
    assert live.state(TRAINING, run_id, "validate") in {None, "none", "scheduled"}
    live.proxy.withhold = None  # the store is back before the retry

    # 2. The worker running train dies, and so does one scheduler.
    running = live.wait("train to run",
                        lambda: (ti := live.rest.task_instance(TRAINING, run_id, "train"))
                        .get("state") == "running" and ti.get("hostname") and ti)  # fmt: skip
    hosts = {host: name for name, host in live.dist.workers.items()}
    killed_worker = hosts[running["hostname"]]
    time.sleep(3)  # mid-task: the step has opened its MLflow run
    live.dist.kill(killed_worker)
    live.dist.kill("scheduler-1")
    live.wait("train to succeed on the other worker",
              lambda: live.state(TRAINING, run_id, "train") == "success")  # fmt: skip
    live.dist.restart(killed_worker)
    live.dist.restart("scheduler-1")

    # 3. PostgreSQL restarts between two tasks: every connection of every component is cut.
    live.wait("evaluate to finish", lambda: live.state(TRAINING, run_id, "evaluate") == "success")
    restart_postgres()

    run = live.finish(TRAINING, run_id)
    states = {t["task_id"]: t["state"] for t in live.rest.task_instances(TRAINING, run_id)}
    assert run["state"] == "success", (states, log_tails(live.dist.airflow.logs))

    ingest_tries = live.tries(TRAINING, run_id, "ingest")
    assert [t["state"] for t in ingest_tries] == ["failed", "success"], ingest_tries
    train_tries = live.tries(TRAINING, run_id, "train")
    assert len(train_tries) >= 2 and train_tries[-1]["state"] == "success", train_tries
    assert train_tries[0]["hostname"] == running["hostname"]
    assert train_tries[-1]["hostname"] in set(hosts) - {running["hostname"]}
    # The partition intact, one finished MLflow run, none left alive, one version.
    manifest = _partition_intact(live)
    experiment = live.client.get_experiment_by_name(f"{MODEL}-training")
    assert experiment is not None
    runs = live.client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlops.airflow_run_id` = '{run_id}'"
    )
    finished = [r for r in runs if r.info.status != "KILLED"]
    assert [r.info.status for r in finished] == ["FINISHED"], runs
    # MLflow keeps its registry in PostgreSQL and the run's artifacts in the S3 bucket.
    artifacts = live.dist.moto.list_keys(live.dist.artifact_bucket, "mlflow/")
    assert any(f"/{finished[0].info.run_id}/artifacts/" in key for key in artifacts), artifacts
    (version,) = live.client.search_model_versions(f"name = '{MODEL}'")
    assert version.tags["mlops.data_sha256"] == manifest["data_sha256"]
    assert version.tags["mlops.partition"] == PARTITION

    # Both schedulers heartbeat again in PostgreSQL. One that exited on the restart was started
    # again by the supervisor under a new job row; the old row's last beat ages out of the window.
    def two_beating() -> bool:
        return live.dist.alive_jobs("SchedulerJob", within_s=10) == 2

    live.wait("two schedulers to heartbeat", two_beating, timeout=60)
    assert live.rest.get("/api/v2/monitor/health")["scheduler"]["status"] == "healthy"
    # The broker's keys are under the stack's own prefix (another stack on this Redis never
    # takes its tasks), its queue's binding included.
    binding = f"_kombu.binding.{live.dist.queue}"
    assert f"{live.dist.redis.prefix}{binding}" in live.dist.redis.find()


def test_the_version_is_released_and_its_traffic_monitored_through_the_store(live: Live) -> None:
    approval = live.wait("the approval request of v1",
                         lambda: next(iter(live.rest.pending_hitl(DEPLOYMENT)), None))  # fmt: skip
    run_id = approval["task_instance"]["dag_run_id"]
    live.rest.answer_hitl(approval, "Approve")
    run = live.finish(DEPLOYMENT, run_id)
    states = {t["task_id"]: t["state"] for t in live.rest.task_instances(DEPLOYMENT, run_id)}
    assert run["state"] == "success", (states, log_tails(live.dist.airflow.logs))
    aliases = live.client.get_registered_model(MODEL).aliases
    assert aliases.get("champion") == "1", aliases
    # The bundle the service loaded is in the store, committed by its manifest.
    bundles = live.keys(f"model-store/{MODEL}/")
    assert any(k.endswith("/manifest.json") for k in bundles), bundles
    ready = requests.get(f"{live.service_url}/ready", timeout=10).json()
    assert ready["stable"] == "1", ready
    # The ledger: one object per entry, the decision among them.
    entries = [
        json.loads(live.object(k)) for k in live.keys(f"pipeline/ledger/{MODEL}-deployments/")
    ]
    assert [e["decision"] for e in entries if e.get("kind", "decision") == "decision"] == [
        "promoted"
    ]

    # Served traffic lands in the store's prediction log; monitoring reads it there.
    from mlops_steps.contract.synthetic import generate_churn

    frame = generate_churn(rows=400, seed=11)
    features = [c for c in frame.columns if c not in {"churn", "customer_id"}]
    records = json.loads(frame[features].astype(object).to_json(orient="records"))
    ids = frame["customer_id"].astype(str).tolist()
    for start in range(0, len(records), 100):
        body = {"instances": records[start : start + 100], "entity_ids": ids[start : start + 100]}
        requests.post(f"{live.service_url}/predict/batch", json=body, timeout=60).raise_for_status()
    live.wait("the prediction log in the store",
              lambda: live.keys(f"predictions/{MODEL}/"), 60)  # fmt: skip
    time.sleep(1)
    monitored = "distributed_monitoring"
    live.rest.trigger_run(MONITORING, {"window_hours": 1}, run_id=monitored)
    run = live.finish(MONITORING, monitored)
    states = {t["task_id"]: t["state"] for t in live.rest.task_instances(MONITORING, monitored)}
    assert run["state"] == "success", (states, log_tails(live.dist.airflow.logs))
    verdicts = [
        k for k in live.keys(f"pipeline/monitoring/{MODEL}/") if k.endswith("/monitoring.json")
    ]
    assert verdicts, live.keys(f"pipeline/monitoring/{MODEL}/")
    verdict = json.loads(live.object(verdicts[-1]))
    assert verdict["rows"]["champion"] >= len(records), verdict["rows"]
