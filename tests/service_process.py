"""Real uvicorn processes of the model service on free loopback ports, for any test package."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlflow_server import free_port


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log_dir: Path
    output: Path
    admin_token: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_starter(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Service]]:
    """Start uvicorn processes of the service (stopped at the end); each waits for /ready, or
    only for the port to answer with ``wait_ready=False``. ``app_factory``: another factory
    (a test's wrapper of the service that injects a fault)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        tracking_uri: str,
        *,
        model_name: str,
        admin_token: str,
        wait_ready: bool = True,
        app_factory: str = "mlops_serving.app:create_app",
        **env: str,
    ) -> Service:
        port = free_port()
        home = tmp_path_factory.mktemp("service")
        output = home / "uvicorn.log"
        environment = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "SERVING_MODEL_NAME": model_name,
            "SERVING_ADMIN_TOKEN": admin_token,
            "SERVING_PREDICTION_LOG": str(home / "predictions"),
            "SERVING_PREDICTION_LOG_FLUSH_MS": "200",
            **env,
        }
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", app_factory,
                 "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                env=environment,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        service = Service(url, process, home / "predictions", output, admin_token)
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
        stop_process(process)


def serve_and_wait_for_log(
    service: Service,
    log_dir: Path,
    customers: Any,
    contract: Any,
    *,
    timeout_s: float = 60.0,
) -> None:
    """``customers`` (a frame of the contract's table) through ``/predict/batch``, 100 rows per
    request with their ids as ``entity_ids``, until the service has logged every row."""
    import json

    features = customers.loc[:, list(contract.feature_names)]
    records = json.loads(features.to_json(orient="records"))
    ids = customers[contract.id_column].astype(str).tolist()
    with service.client() as client:
        for start in range(0, len(records), 100):
            batch = slice(start, start + 100)
            body = {"instances": records[batch], "entity_ids": ids[batch]}
            response = client.post("/predict/batch", json=body)
            assert response.status_code == 200, response.text
    deadline = time.monotonic() + timeout_s
    logged = 0
    while time.monotonic() < deadline:
        logged = sum(len(p.read_bytes().splitlines()) for p in log_dir.glob("date=*/*.jsonl"))
        if logged >= len(records):
            return
        time.sleep(0.2)
    raise AssertionError(f"the service logged {logged} of {len(records)} predictions")
