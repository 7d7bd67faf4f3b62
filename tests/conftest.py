"""Test harness: an isolated Airflow home and MLOPS home, and a real MLflow server on loopback.

Airflow reads its configuration when first imported, so the environment is set here, at import
time of the root conftest, before any test module imports Airflow.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlops-tests-"))

# Settings a developer's shell (or `make up`) may export must not leak into the suite.
for leaked in [k for k in os.environ if k.startswith(("MLOPS_", "AIRFLOW_VAR_MLOPS_"))]:
    os.environ.pop(leaked)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # A user who answers approvals through the REST API (tests/airflow_api.py).
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "approver:admin",
        "MLOPS_HOME": str(_SESSION_DIR / "mlops"),
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # MLflow's telemetry thread (no network here) sets and unsets a variable in os.environ
        # while other threads iterate it: "KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'" in a step.
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
# The approver's password where SimpleAuthManager reads it (it only generates missing ones).
(Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated").write_text(
    json.dumps({"approver": secrets.token_urlsafe(16)})
)
sys.path.insert(0, str(REPO / "scripts"))

from mlflow_server import free_port, start_server, stop_pid  # noqa: E402
from tests import service_process  # noqa: E402
from tests.fixtures.contracts import own_churn_contract  # noqa: E402

pytest_plugins = ["tests.fixtures.champion"]

service_starter = pytest.fixture(scope="session")(service_process.service_starter)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """A real `mlflow server` (SQLite + local artifacts) on a free loopback port."""
    server = start_server(_SESSION_DIR / "mlflow", free_port())
    try:
        yield server.url
    finally:
        stop_pid(server.pid)


@pytest.fixture
def mlops_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh MLOPS home for one test (data partitions are per test)."""
    from mlops_steps.core.settings import get_settings

    home = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_HOME", str(home))
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def tracking(
    mlflow_server: str,
    mlops_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> str:
    """Steps pointed at the real server, with a model (registry entry, experiment and contract:
    the churn contract under the test's own model name) unique to the test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    own_churn_contract(request.node.nodeid, tmp_path, monkeypatch)
    return mlflow_server


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised Airflow metadata database (SQLite) for dag.test()."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield endpoint
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Live modules first: Airflow stacks (``e2e``), then service processes (``serving``), then
    the rest, each module's tests in their own order. ``make test``'s two workers take whole
    modules in this order (``--dist loadfile --no-loadscope-reorder``; xdist's default hands out
    the modules with the most tests first), so they end on short modules together instead
    of one starting a long live module while the other is nearly done (two runs of the same
    suite in the order found took 23 and 27 min here; the slower ended on a live module)."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("e2e"):
            return 0
        return 1 if item.get_closest_marker("serving") else 2

    items.sort(key=rank)  # stable: modules and their tests keep their relative order


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's Airflow home, MLflow store and data (servers are stopped by then)."""
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
