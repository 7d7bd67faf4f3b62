"""Fixtures for the provider's registry hook, trigger, sensor and webhook bridge: a real MLflow
server (the session fixture), an Airflow connection pointing at it, and a loopback stub for the
answers a plain local MLflow cannot give (401, 503)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mlflow import MlflowClient


@pytest.fixture
def registry(tracking: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A registered model unique to the test, reached through connection ``mlflow_default``."""
    import os

    name = os.environ["MLOPS_MODEL_NAME"]
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", tracking)
    client = MlflowClient(tracking)
    client.create_registered_model(name)
    yield Registry(tracking, name, client)


@dataclass
class Registry:
    url: str
    model: str
    client: MlflowClient

    def add_version(self, **tags: str) -> str:
        version = self.client.create_model_version(
            self.model, source="s3://bucket/model", tags=tags
        )
        return str(version.version)


@dataclass
class StubServer:
    """Answers each request with the next scripted (status, body); the last one repeats."""

    url: str
    script: list[tuple[int, Any]]
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def stub_mlflow() -> Iterator[StubServer]:
    stub = StubServer("", [(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})])

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            stub.seen.append(f"{self.command} {self.path}")
            status, body = stub.script.pop(0) if len(stub.script) > 1 else stub.script[0]
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
