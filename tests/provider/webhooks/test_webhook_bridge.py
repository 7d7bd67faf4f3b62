"""The webhook bridge end to end: the real MLflow server delivers to Airflow's own API app (with
this project's plugin mounted) served by uvicorn on loopback, on the test metadata database.

The webhook is registered by ``scripts/register_webhook.py``; the asset the deployment DAG
schedules on is created the way DAG parsing creates it (a DAG file synced to the database).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from mlflow_server import WEBHOOK_CACHE_TTL_S, free_port
from mlops_provider.webhooks.signature import sign

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[3]
SECRET = "bridge-test-secret-" + uuid.uuid4().hex
CONSUMER_DAG = "webhook_consumer"


@dataclass
class Bridge:
    url: str  # the webhook endpoint, http://127.0.0.1:<port>/mlops-webhooks/mlflow
    model: str
    asset_id: int
    mlflow: MlflowClient
    log: Path

    def post(
        self,
        body: bytes,
        *,
        secret: str = SECRET,
        delivery: str | None = None,
        ts: int | None = None,
    ) -> httpx.Response:
        stamp = str(int(time.time()) if ts is None else ts)
        headers = _signed_headers(body, delivery or str(uuid.uuid4()), stamp, secret)
        return httpx.post(self.url, content=body, headers=headers, timeout=30)


def _signed_headers(body: bytes, delivery: str, stamp: str, secret: str = SECRET) -> dict[str, str]:
    """Headers exactly as MLflow sends them."""
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, delivery, stamp, body),
    }


def _event(model: str, version: str = "1", alias: str | None = "challenger") -> bytes:
    entity = "model_version_alias" if alias else "model_version"
    data = {"name": model, "version": version, **({"alias": alias} if alias else {})}
    payload = {
        "entity": entity,
        "action": "created",
        "timestamp": "2026-11-23T00:00:00Z",
        "data": data,
    }
    return json.dumps(payload).encode()


def asset_events(asset_id: int) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).where(AssetEvent.asset_id == asset_id).order_by(AssetEvent.id)
        ).all()
        return [dict(row.extra) for row in rows]


def _wait_for_events(asset_id: int, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = asset_events(asset_id)
        if len(events) >= count:
            return events
        time.sleep(0.2)
    raise AssertionError(f"expected {count} asset events, have {asset_events(asset_id)}")


def _declare_consumer_dag(folder: Path, model: str) -> int:
    """Write a DAG scheduled on the model's registry-event asset and sync it like the DAG
    processor does; unpause it so asset events queue runs. Returns the asset id."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    (folder / "consumer.py").write_text(
        textwrap.dedent(f"""
        import pendulum
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG, Asset

        with DAG(
            {CONSUMER_DAG!r},
            schedule=[Asset(name="{model}_registry_event", uri="mlops://{model}/registry-event")],
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        ):
            EmptyOperator(task_id="noop")
        """)
    )
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.execute(
            update(DagModel).where(DagModel.dag_id == CONSUMER_DAG).values(is_paused=False)
        )
        asset_id = session.scalar(
            select(AssetModel.id).where(AssetModel.uri == f"mlops://{model}/registry-event")
        )
    assert asset_id is not None
    return int(asset_id)


def _register(mlflow_url: str, airflow_url: str, name: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "register_webhook.py"),
         "--mlflow-url", mlflow_url, "--airflow-url", airflow_url,
         "--secret-env", "BRIDGE_TEST_SECRET", "--name", name, "--test"],
        env={**os.environ, "BRIDGE_TEST_SECRET": SECRET},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert SECRET not in completed.stdout + completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
def bridge(
    mlflow_server: str, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bridge]:
    home = tmp_path_factory.mktemp("bridge")
    model = f"wh_{uuid.uuid4().hex[:10]}"
    (home / "dags").mkdir()
    asset_id = _declare_consumer_dag(home / "dags", model)

    port = free_port()
    log = home / "api-server.log"
    env = {
        **os.environ,
        "MLOPS_WEBHOOK_SECRET": SECRET,
        "PYTHONPATH": str(REPO / "include"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "airflow.api_fastapi.app:create_app",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    name = f"bridge-{model}"
    client = MlflowClient(mlflow_server)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/mlops-webhooks/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
        out = _register(mlflow_server, base, name)
        assert out.startswith(f"created webhook {name!r}")
        assert "test delivery: success=True status=200" in out  # MLflow's ping, signature OK
        assert "status=200" in _register(mlflow_server, base, name).splitlines()[-1]
        assert [w.name for w in client.list_webhooks() if w.name == name] == [name]  # updated
        time.sleep(WEBHOOK_CACHE_TTL_S + 0.5)  # MLflow caches its webhook list per event
        yield Bridge(f"{base}/mlops-webhooks/mlflow", model, asset_id, client, log)
    finally:
        for webhook in client.list_webhooks():
            if webhook.name == name:
                client.delete_webhook(webhook.webhook_id)
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_registry_events_become_asset_events(bridge: Bridge) -> None:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    assert asset_events(bridge.asset_id) == []  # the two test pings created nothing
    bridge.mlflow.create_registered_model(bridge.model)
    version = bridge.mlflow.create_model_version(bridge.model, source="s3://bucket/model")
    first = _wait_for_events(bridge.asset_id, 1)
    assert first[0]["event"] == "model_version.created" and first[0]["version"] == "1"

    bridge.mlflow.set_registered_model_alias(bridge.model, "challenger", version.version)
    events = _wait_for_events(bridge.asset_id, 2)
    time.sleep(1.0)  # nothing else trickles in: exactly one event per registry change
    assert asset_events(bridge.asset_id) == events and len(events) == 2
    alias_event = events[1]
    assert set(alias_event) >= {
        "event",
        "model_name",
        "version",
        "alias",
        "delivery_id",
        "timestamp",
    }
    assert alias_event["event"] == "model_version_alias.created"
    assert alias_event["model_name"] == bridge.model
    assert (alias_event["version"], alias_event["alias"]) == ("1", "challenger")
    uuid.UUID(alias_event["delivery_id"])
    assert alias_event["timestamp"].startswith(time.strftime("%Y-", time.gmtime()))
    with create_session() as session:  # the consumer DAG got a run queued
        queued = session.scalars(select(AssetDagRunQueue.target_dag_id)).all()
    assert CONSUMER_DAG in queued


def test_replay_of_a_real_delivery_is_rejected(bridge: Bridge) -> None:
    before = _wait_for_events(bridge.asset_id, 1)
    delivered = before[-1]["delivery_id"]  # an id MLflow really delivered
    replay = bridge.post(_event(bridge.model, version="9"), delivery=delivered)
    assert replay.status_code == 401, replay.text
    assert "already recorded" in replay.json()["detail"]
    assert asset_events(bridge.asset_id) == before


def test_forged_and_stale_deliveries_are_rejected(bridge: Bridge) -> None:
    before = asset_events(bridge.asset_id)
    body = _event(bridge.model)
    forged = bridge.post(body, secret="guessed-secret-0123456789")
    assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
    stale = bridge.post(body, ts=int(time.time()) - 301)
    assert stale.status_code == 401 and "tolerance 300 s" in stale.json()["detail"]
    unsigned = httpx.post(bridge.url, content=body, timeout=10)
    assert unsigned.status_code == 401
    assert asset_events(bridge.asset_id) == before


def test_duplicate_delivery_creates_one_event(bridge: Bridge) -> None:
    before = len(asset_events(bridge.asset_id))
    body, delivery = _event(bridge.model, version="2"), str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=4) as pool:  # the same delivery, several times at once
        answers = list(pool.map(lambda _: bridge.post(body, delivery=delivery), range(4)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 401, 401, 401]
    assert bridge.post(body, delivery=delivery).status_code == 401  # and later
    events = asset_events(bridge.asset_id)
    assert len(events) == before + 1 and events[-1]["delivery_id"] == delivery


def test_expired_delivery_claims_are_pruned(bridge: Bridge) -> None:
    """Delivery ids are remembered only as long as their timestamps could pass (2 x tolerance)."""
    from datetime import UTC, datetime, timedelta

    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from mlops_provider.webhooks.assets import CLAIM_PREFIX

    old_key = f"{CLAIM_PREFIX}expired-delivery"
    with create_session() as session:
        session.add(AssetStateStoreModel(
            asset_id=bridge.asset_id, key=old_key, value="{}", last_updated_by_kind="api",
            updated_at=datetime.now(UTC) - timedelta(hours=1),
        ))  # fmt: skip
    assert bridge.post(_event(bridge.model, version="6")).status_code == 201
    with create_session() as session:
        keys = session.scalars(
            select(AssetStateStoreModel.key).where(AssetStateStoreModel.asset_id == bridge.asset_id)
        ).all()
    assert old_key not in keys and len(keys) == len(asset_events(bridge.asset_id))


def test_what_is_acknowledged_without_an_event(bridge: Bridge) -> None:
    before = asset_events(bridge.asset_id)
    unknown_model = bridge.post(_event("model_no_dag_declares"))
    assert unknown_model.status_code == 202, unknown_model.text
    assert unknown_model.json()["status"] == "ignored"
    assert "no DAG declares" in unknown_model.json()["detail"]
    tag_set = {"entity": "model_version_tag", "action": "set", "data": {"name": bridge.model}}
    other = bridge.post(json.dumps(tag_set).encode())
    assert other.status_code == 202 and other.json()["status"] == "ignored"
    malformed = bridge.post(b'{"entity": "model_version_alias", "action": "created"')
    assert malformed.status_code == 400 and "not JSON" in malformed.json()["detail"]
    alias_only = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": bridge.model},
    }
    no_version = bridge.post(json.dumps(alias_only).encode())
    assert no_version.status_code == 400 and "data.version" in no_version.json()["detail"]
    assert asset_events(bridge.asset_id) == before


def test_replay_memory_is_shared_across_processes(bridge: Bridge) -> None:
    """Another API-server process (here: the app in this test process, on the same database)
    rejects a delivery the uvicorn process accepted: what a restart or a second worker sees."""
    from fastapi.testclient import TestClient

    from mlops_provider.webhooks.app import create_standalone_app
    from mlops_provider.webhooks.mount import URL_PREFIX

    accepted = asset_events(bridge.asset_id)[-1]["delivery_id"]
    body, stamp = _event(bridge.model, version="3"), str(int(time.time()))
    headers = _signed_headers(body, accepted, stamp)
    os.environ["MLOPS_WEBHOOK_SECRET"] = SECRET
    try:
        with TestClient(create_standalone_app()) as other_worker:
            answer = other_worker.post(f"{URL_PREFIX}/mlflow", content=body, headers=headers)
    finally:
        del os.environ["MLOPS_WEBHOOK_SECRET"]
    assert answer.status_code == 401 and "already recorded" in answer.json()["detail"]


def test_no_secret_refuses_every_delivery(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from mlops_provider.webhooks.app import create_app, resolve_secret

    monkeypatch.delenv("MLOPS_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_WEBHOOK", raising=False)
    assert resolve_secret() is None  # no env var, no connection in the metadata DB
    before = asset_events(bridge.asset_id)
    body, delivery, stamp = (
        _event(bridge.model, version="5"),
        str(uuid.uuid4()),
        str(int(time.time())),
    )
    headers = _signed_headers(body, delivery, stamp)
    with TestClient(create_app()) as unconfigured:
        refused = unconfigured.post("/mlflow", content=body, headers=headers)
        assert unconfigured.get("/health").json()["secret_configured"] is False
    assert refused.status_code == 503
    assert "MLOPS_WEBHOOK_SECRET" in refused.json()["detail"]
    assert "'mlflow_webhook'" in refused.json()["detail"]
    assert "no webhook secret configured" in caplog.text
    assert asset_events(bridge.asset_id) == before

    # The connection's password is the other place the secret can live.
    conn = {"conn_type": "generic", "password": "from-conn-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_WEBHOOK", json.dumps(conn))
    assert resolve_secret() == "from-conn-0123456789"


def test_server_log_never_shows_the_secret(bridge: Bridge) -> None:
    text = bridge.log.read_text()
    assert "MLflow webhook" in text  # the bridge did log its decisions
    assert SECRET not in text


def test_plugin_is_loaded_without_importing_fastapi() -> None:
    """Every Airflow component loads plugins; only the API server should pay for FastAPI."""
    code = textwrap.dedent("""
        import json, sys
        from airflow import plugins_manager
        plugins_manager.ensure_plugins_loaded()
        loaded_fastapi = "fastapi" in sys.modules
        apps, _ = plugins_manager.get_fastapi_plugins()
        print(json.dumps({"fastapi": loaded_fastapi,
                          "prefixes": [a["url_prefix"] for a in apps]}))
    """)
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["fastapi"] is False
    assert sorted(report["prefixes"]) == ["/mlops-reports", "/mlops-webhooks"]
