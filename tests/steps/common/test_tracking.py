"""The steps compare their MLflow client with the tracking server's version before any call (a
real server on loopback answers GET /version): a skew beyond MLOPS_MLFLOW_VERSION_SKEW fails with
a named error naming both versions and the fix, and the check costs one request per process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mlflow
import pytest
import requests

from mlops_steps.common import tracking as tracking_module
from mlops_steps.common.tracking import MlflowVersionMismatch, check_versions, connect
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import get_settings


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    tracking_module._checked_server.cache_clear()
    get_settings.cache_clear()
    yield
    tracking_module._checked_server.cache_clear()
    get_settings.cache_clear()


def _server_version(url: str) -> str:
    return requests.get(f"{url}/version", timeout=10).text.strip()


@pytest.mark.parametrize(
    ("client", "server", "allowed", "ok"),
    [
        ("3.17.2", "3.17.0", "major", True),
        ("3.17.2", "3.9.1", "major", True),
        ("3.17.2", "2.22.1", "major", False),
        ("3.17.2", "3.16.0", "minor", False),
        ("3.17.2", "3.17.0rc1", "minor", True),
        ("3.18.0.dev0", "3.17.2", "major", True),
    ],
)
def test_allowed_skew(client: str, server: str, allowed: Any, ok: bool) -> None:
    if ok:
        check_versions(client, server, allowed, uri="http://x")
    else:
        with pytest.raises(MlflowVersionMismatch, match=f"client {client} and server {server}"):
            check_versions(client, server, allowed, uri="http://x")


def test_a_server_version_that_is_no_version_number_fails_closed() -> None:
    with pytest.raises(MlflowVersionMismatch, match="'<html>' is not a version number"):
        check_versions("3.17.2", "<html>", "major", uri="http://x")


def test_a_matching_server_is_asked_once_per_process(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real_get = requests.get

    def counting_get(url: str, **kwargs: Any) -> Any:
        asked.append(url.removeprefix(tracking))
        return real_get(url, **kwargs)

    monkeypatch.setattr(requests, "get", counting_get)
    for _ in range(3):
        connect()
    assert asked == ["/health", "/version"]


def test_a_major_skew_fails_naming_both_versions_and_the_fix(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server_version(tracking)
    assert server == mlflow.__version__  # the fixture's server runs this environment's MLflow
    monkeypatch.setattr(mlflow, "__version__", "2.22.1")
    with pytest.raises(MlflowVersionMismatch) as caught:
        connect()
    message = str(caught.value)
    assert message == (
        f"{tracking}: MLflow client 2.22.1 and server {server} differ in their major version "
        f"(MLOPS_MLFLOW_VERSION_SKEW=major) Fix: install mlflow=={server} where the steps run "
        f"(the task image or the worker's environment), or upgrade the server to 2.22.1"
    )


def test_a_configured_minor_skew_is_enforced(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server_version(tracking)
    major, minor = (int(part) for part in server.split(".")[:2])
    older_minor = f"{major}.{minor - 1}.0" if minor else f"{major}.{minor + 1}.0"
    monkeypatch.setattr(mlflow, "__version__", older_minor)
    connect()  # the default allows any minor within the major
    monkeypatch.setenv("MLOPS_MLFLOW_VERSION_SKEW", "minor")
    get_settings.cache_clear()
    with pytest.raises(MlflowVersionMismatch, match=r"differ in their major\.minor version"):
        connect()


class _NoVersionRoute(BaseHTTPRequestHandler):
    """A proxy that passes /health but not /version."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else b"not found")

    def log_message(self, *args: Any) -> None:
        pass


def test_a_server_that_does_not_say_its_version_fails_closed(
    mlops_env: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoVersionRoute)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        with pytest.raises(StepError, match=r"GET /version answered HTTP 404"):
            connect()
    finally:
        server.shutdown()
