"""The steps compare their MLflow client with the tracking server's version before any call (a
real server on loopback answers GET /version): a skew beyond MLOPS_MLFLOW_VERSION_SKEW fails with
a named error naming both versions and the fix, and the check costs one request per process."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import mlflow
import pytest
import requests

from mlops_steps.common import tracking as tracking_module
from mlops_steps.common.tracking import (
    MlflowVersionMismatch,
    check_versions,
    connect,
    version_by_alias,
)
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


def _version_with_alias(tracking: str, alias: str) -> Any:
    """A registered version of the test's model with a run, tags and ``alias``."""
    settings = get_settings()
    client = mlflow.MlflowClient(tracking)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment(settings.experiment_name)
    with mlflow.start_run() as run:
        mlflow.log_dict({"stand-in": True}, "model/MLmodel.json")
    client.create_registered_model(settings.model_name)
    version = client.create_model_version(
        settings.model_name,
        f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={"mlops.partition": "p1", "mlops.data_sha256": "abc"},
        description="a stand-in",
    )
    client.set_registered_model_alias(settings.model_name, alias, version.version)
    return client.get_model_version_by_alias(settings.model_name, alias)


def test_the_plain_rest_path_reads_what_mlflows_client_reads(tracking: str) -> None:
    expected = _version_with_alias(tracking, "champion")
    client = connect()
    assert client.speaks_rest
    found = version_by_alias(client, expected.name, "champion")
    assert isinstance(found, tracking_module.RegisteredVersion)
    for attribute in (
        "name", "version", "source", "run_id", "status", "current_stage", "description",
        "tags", "aliases", "creation_timestamp", "last_updated_timestamp",
    ):  # fmt: skip
        assert getattr(found, attribute) == getattr(expected, attribute), attribute
    assert client.get_model_version_by_alias(expected.name, "champion") == found
    assert version_by_alias(client, expected.name, "challenger") is None  # no such alias
    assert version_by_alias(client, "no_such_model_anywhere", "champion") is None


def test_the_plain_rest_path_writes_tags_and_fails_as_mlflow_fails(tracking: str) -> None:
    expected = _version_with_alias(tracking, "champion")
    client = connect()
    client.set_tag(expected.run_id, "mlops.gate", 1.5)
    assert mlflow.MlflowClient(tracking).get_run(expected.run_id).data.tags["mlops.gate"] == "1.5"
    with pytest.raises(mlflow.exceptions.MlflowException) as caught:
        client.set_tag("0" * 32, "mlops.gate", "x")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(mlflow.exceptions.MlflowException) as caught:
        client.get_model_version_by_alias(expected.name, "challenger")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_any_other_call_and_client_only_settings_go_through_mlflows_client(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _version_with_alias(tracking, "champion")
    client = connect()
    version = client.get_model_version(expected.name, expected.version)  # MLflow's own client
    assert type(version) is type(expected)
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert not client.speaks_rest
    assert type(version_by_alias(client, expected.name, "champion")) is type(expected)


def test_the_rest_path_never_loads_mlflow(tracking: str) -> None:
    """A step that only reads the champion and tags a run (validate, gate) does not pay for
    importing MLflow."""
    expected = _version_with_alias(tracking, "champion")
    code = f"""
import sys
from mlops_steps.common.tracking import connect, version_by_alias
client = connect()
found = version_by_alias(client, {expected.name!r}, "champion")
client.set_tag(found.run_id, "mlops.probe", "1")
assert version_by_alias(client, {expected.name!r}, "challenger") is None
print(found.version, "mlflow" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == [expected.version, "False"]
