"""Serving fixtures: two registered model versions in a real MLflow server, and real uvicorn
processes of the service on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from mlflow_server import free_port

MODEL = "serving_churn"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def registry(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `serving_churn`: v1 = champion, v2 = challenger (trained by the real steps)."""
    from mlops_steps import cli

    overrides = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLOPS_HOME": str(tmp_path_factory.mktemp("serving-mlops")),
        "MLOPS_MODEL_NAME": MODEL,
        "MLOPS_EXPERIMENT": f"exp-{MODEL}",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        for seed in ("1", "2"):
            partition = f"seed{seed}"
            for argv in (
                ["ingest", "--rows", "8000", "--seed", seed],
                ["validate"],
                ["train"],
                ["evaluate", "--bootstrap-resamples", "50"],
                ["gate", "--max-auc-drop", "1"],
                ["register"],
            ):
                assert cli.main([argv[0], "--partition", partition, *argv[1:]]) == 0, argv
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return mlflow_server


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log_dir: Path
    output: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(ADMIN_TOKEN)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def start_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Service]]:
    """Start a uvicorn process of the service; waits for /ready unless told not to."""
    started: list[subprocess.Popen[bytes]] = []

    def start(tracking_uri: str, *, wait_ready: bool = True, **env: str) -> Service:
        port = free_port()
        home = tmp_path_factory.mktemp("service")
        output = home / "uvicorn.log"
        environment = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "SERVING_MODEL_NAME": MODEL,
            "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVING_PREDICTION_LOG": str(home / "predictions"),
            "SERVING_PREDICTION_LOG_FLUSH_MS": "200",
            **env,
        }
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "mlops_serving.app:create_app",
                 "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                env=environment,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        service = Service(f"http://127.0.0.1:{port}", process, home / "predictions", output)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return service  # exited: the caller asserts on it
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"{service.url}/ready", timeout=2).status_code
                if status == 200 or (not wait_ready and status == 503):
                    return service
            time.sleep(0.2)
        raise AssertionError(f"service did not start; log:\n{output.read_text()[-3000:]}")

    yield start
    for process in started:
        _stop(process)
