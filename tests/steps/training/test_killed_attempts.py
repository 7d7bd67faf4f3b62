"""A `train` attempt that dies mid-run (SIGKILL: OOM, a lost node) or is stopped (SIGTERM: a task
timeout, a deleted pod) leaves no MLflow run looking alive: the real step runs as a child process
against the real MLflow server, is killed once its run exists, and the retry ends the partition
with exactly one FINISHED run and, after register, exactly one model version."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlops_steps.cli import main as cli
from mlops_steps.common.storage import Partition, read_json
from mlops_steps.core.settings import code_version, load_settings

ROWS = "20000"  # enough that the run exists for seconds before it could finish
_BOUND_S = 600.0  # a hang bound, not a speed assertion


@pytest.fixture
def steps(tracking: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    # The training key includes the code version: fixed, so a commit made by someone else
    # between the attempts cannot change it. code_version() is cached per process: this process
    # must see the same value as the child attempts (and later tests their own).
    monkeypatch.setenv("MLOPS_CODE_SHA", "test-killed-attempts")
    code_version.cache_clear()
    yield MlflowClient(tracking)
    code_version.cache_clear()


def _step(verb: str, partition: str, *args: str) -> int:
    return cli.main([verb, "--partition", partition, *args])


def _runs(client: MlflowClient, partition: str) -> list[Any]:
    experiment = client.get_experiment_by_name(load_settings().experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlops.partition` = '{partition}'"
    )


def _start_train(partition: str) -> subprocess.Popen[bytes]:
    command = str(Path(sys.executable).parent / "mlops-step")
    return subprocess.Popen(
        [command, "train", "--partition", partition, "--seed", "42"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_running_run(client: MlflowClient, partition: str, child: Any) -> str:
    deadline = time.monotonic() + _BOUND_S
    while time.monotonic() < deadline:
        running = [r for r in _runs(client, partition) if r.info.status == "RUNNING"]
        if running:
            return running[0].info.run_id
        assert child.poll() is None, f"train exited ({child.returncode}) before its run appeared"
        time.sleep(0.05)
    raise AssertionError("the train attempt never created its MLflow run")


def _prepared(partition: str) -> None:
    assert _step("ingest", partition, "--rows", ROWS, "--seed", "3") == 0
    assert _step("validate", partition) == 0


def test_a_killed_attempt_is_retired_and_the_retry_registers_one_version(
    steps: MlflowClient,
) -> None:
    client, partition = steps, "killed"
    _prepared(partition)

    child = _start_train(partition)
    killed_run = _wait_for_running_run(client, partition, child)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert client.get_run(killed_run).info.status == "RUNNING"  # what the dead attempt left

    assert _step("train", partition, "--seed", "42") == 0  # the retry
    statuses = {r.info.run_id: r.info.status for r in _runs(client, partition)}
    trained = read_json(
        Partition.of(load_settings().dataset_root, partition).result("train"), produced_by="train"
    )
    assert trained["reused"] is False
    assert statuses == {killed_run: "KILLED", trained["run_id"]: "FINISHED"}
    reason = client.get_run(killed_run).data.tags["mlops.killed_reason"]
    assert reason.startswith("retired by a later attempt (run by hand, pid ")

    assert _step("evaluate", partition, "--bootstrap-resamples", "100") == 0
    assert _step("gate", partition, "--max-latency-ms", "1000") == 0
    for _ in range(2):  # register, and a retry of it
        assert _step("register", partition) == 0
    name = load_settings().model_name
    versions = client.search_model_versions(f"name = '{name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", trained["run_id"])]

    # Another retry of train reuses the finished run; nothing new appears.
    assert _step("train", partition, "--seed", "42") == 0
    assert {r.info.run_id: r.info.status for r in _runs(client, partition)} == statuses


def test_a_stopped_attempt_ends_its_run_killed(steps: MlflowClient) -> None:
    client, partition = steps, "stopped"
    _prepared(partition)

    child = _start_train(partition)
    run_id = _wait_for_running_run(client, partition, child)
    child.send_signal(signal.SIGTERM)  # what Airflow's on_kill and Kubernetes send first
    assert child.wait(timeout=_BOUND_S) == 128 + signal.SIGTERM
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["mlops.killed_reason"] == "SIGTERM: the task timed out or was stopped"
    assert "mlops.train_result" not in run.data.tags
