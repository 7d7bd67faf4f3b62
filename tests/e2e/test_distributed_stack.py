"""The distributed profile (scripts/distributed_stack.py) live: Airflow on PostgreSQL with the
CeleryExecutor (Redis broker, two workers, two schedulers), MLflow on PostgreSQL with artifacts in
a moto S3 bucket, and the data plane in another bucket.

One test, because starting the stack is most of its cost. Its DAG folder holds one 2-task DAG
whose tasks write what they saw (the worker's MLOPS_HOME and host name) to the data-plane bucket.
PostgreSQL and Redis must be running: the test fails, naming the one that is down, if not.
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import redis
from mlflow import MlflowClient

from airflow_rest import ApiError
from distributed_stack import DistributedStack
from processes import log_tails, wait_for

pytestmark = pytest.mark.e2e

DAG_ID = "distributed_smoke"
DAG_FILE = '''
import json
import os
from datetime import datetime

import boto3
from airflow.sdk import dag, task


def _evidence(name):
    """What this task saw, also written to the data plane (MLOPS_DATA_ROOT, an S3 prefix)."""
    seen = {
        "task": name,
        "mlops_home": os.environ["MLOPS_HOME"],
        "worker": os.environ["MLOPS_STACK_WORKER_HOSTNAME"],
    }
    bucket, _, prefix = os.environ["MLOPS_DATA_ROOT"].removeprefix("s3://").partition("/")
    boto3.client("s3").put_object(
        Bucket=bucket, Key=f"{prefix}/evidence/{name}.json", Body=json.dumps(seen)
    )
    return seen


@dag(dag_id="distributed_smoke", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def distributed_smoke():
    @task
    def first():
        return _evidence("first")

    @task
    def second(upstream):
        assert upstream["task"] == "first"
        return _evidence("second")

    second(first())


distributed_smoke()
'''


def _run_finished(stack: DistributedStack, run_id: str) -> dict[str, Any] | None:
    run = stack.airflow.rest.run(DAG_ID, run_id)
    return run if run["state"] in {"success", "failed"} else None


@pytest.mark.timeout(420)
def test_distributed_stack_runs_on_celery_postgres_and_s3(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "distributed_smoke.py").write_text(DAG_FILE)
    started = time.monotonic()
    stack = DistributedStack.start(tmp_path / "stack", dags_folder=dags)
    print(f"stack up in {time.monotonic() - started:.0f} s")
    try:
        rest, logs = stack.airflow.rest, stack.airflow.logs
        errors = (OSError, ValueError, ApiError)
        wait_for("the DAG to be parsed", lambda: DAG_ID in rest.dag_ids(), 120, logs, errors)
        run_id = str(rest.trigger_run(DAG_ID)["dag_run_id"])
        run = wait_for("the run to finish", lambda: _run_finished(stack, run_id), 180, logs, errors)
        assert run["state"] == "success", log_tails(logs)
        print(f"run done at {time.monotonic() - started:.0f} s")

        # Each task ran on one of the stack's Celery workers, with that worker's own MLOPS_HOME.
        hosts = {host: name for name, host in stack.workers.items()}
        s3 = stack.moto.client()
        for ti in rest.task_instances(DAG_ID, run_id):
            assert ti["state"] == "success"
            assert ti["hostname"] in hosts, ti
            key = f"pipeline/evidence/{ti['task_id']}.json"
            seen = json.loads(s3.get_object(Bucket=stack.data_bucket, Key=key)["Body"].read())
            assert seen["worker"] == ti["hostname"]
            assert seen["mlops_home"] == str(stack.home / hosts[ti["hostname"]])

        # Two schedulers heartbeat in the shared PostgreSQL database (HA).
        assert stack.alive_jobs("SchedulerJob") == 2
        health = rest.get("/api/v2/monitor/health")
        assert health["scheduler"]["status"] == "healthy", health

        # MLflow answers, and an artifact logged through it lands in the moto bucket.
        client = MlflowClient(tracking_uri=stack.mlflow.url)
        experiment = client.create_experiment("distributed-smoke")
        mlflow_run = client.create_run(experiment)
        client.log_text(mlflow_run.info.run_id, "hello from the distributed stack", "smoke.txt")
        artifact_keys = stack.moto.list_keys(stack.artifact_bucket, "mlflow/")
        assert any(
            key.endswith(f"{mlflow_run.info.run_id}/artifacts/smoke.txt") for key in artifact_keys
        ), artifact_keys

        # The broker's keys are under the stack's own prefix, its queue's binding included.
        binding = f"_kombu.binding.{stack.queue}"
        assert f"{stack.redis.prefix}{binding}" in stack.redis.find()
        with closing(redis.Redis.from_url(stack.redis.url)) as unprefixed:
            assert not unprefixed.exists(binding)
    finally:
        stack.stop()
        print(f"stopped at {time.monotonic() - started:.0f} s")
    assert stack.databases.existing() == []
    assert stack.redis.find() == []
