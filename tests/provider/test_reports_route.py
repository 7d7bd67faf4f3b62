"""The reports route in Airflow's own API app (``create_app("core")``, this project's plugins
mounted from plugins/), in-process with FastAPI's TestClient on the test metadata database.

Authentication is Airflow's: a JWT from ``POST /auth/token`` as the SimpleAuthManager user the
test harness declares, sent as a bearer token or as the UI's ``_token`` cookie. The files are
real files under a per-test data root, including symlinks that leave it; the links are built by
the same code the steps use (``mlops_steps.core.report_links``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mlops_steps.core.report_links import URL_PREFIX, report_link, report_url, url_for_report
from mlops_steps.core.settings import get_settings, load_settings
from mlops_steps.monitoring.reporting import asset_extra

APPROVER = "approver"  # declared in tests/conftest.py
BASE = "http://testserver"  # TestClient's host: the "Airflow URL" of these tests


@pytest.fixture(scope="module")
def api(airflow_db: Path) -> Iterator[TestClient]:
    from airflow.api_fastapi.app import create_app

    with TestClient(create_app("core")) as client:
        yield client


@pytest.fixture(scope="module")
def token(api: TestClient) -> str:
    passwords = Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    credentials = {"username": APPROVER, "password": json.loads(passwords.read_text())[APPROVER]}
    response = api.post("/auth/token", json=credentials)
    assert response.status_code in (200, 201), response.text
    return str(response.json()["access_token"])


@dataclass
class Reports:
    root: Path  # the data root the route serves
    docs: Path  # a partition's Data Docs index
    gate: Path  # its gate report
    drift: Path  # a monitoring window's drift report
    outside: Path  # an HTML file beside (not under) the data root


@pytest.fixture
def reports(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> Reports:
    """A data root laid out as the steps write it, plus what must never be served from it."""
    monkeypatch.setenv("MLOPS_AIRFLOW_URL", BASE)
    get_settings.cache_clear()
    root = get_settings().data_root
    partition = root / "churn" / "partition=20261130T000000"
    docs = partition / "validation" / "data_docs" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html><body><h1>Data Docs of churn</h1></body></html>")
    gate = partition / "results" / "gate.json"
    gate.parent.mkdir(parents=True)
    gate.write_text(json.dumps({"decision": "passed", "reason": "all checks passed"}))
    (partition / "data.parquet").write_bytes(b"PAR1 training rows PAR1")
    drift = root / "monitoring" / "churn" / "window=2026-11-30T00 report" / "data_drift.html"
    drift.parent.mkdir(parents=True)
    drift.write_text("<html><body>drift of a window</body></html>")
    (root / "ledger").mkdir()
    (root / "ledger" / "churn-deployments.jsonl").write_text('{"version": "1"}\n')
    (root / ".hidden.json").write_text("{}")
    outside = mlops_env / "secret.html"
    outside.write_text("<html>not a report of this pipeline</html>")
    # Symlinks: one out of the root, one in it that gives a data file a report's name.
    (root / "escape.html").symlink_to(outside)
    (root / "monitoring" / "escape-dir").symlink_to(mlops_env, target_is_directory=True)
    (root / "churn" / "rows.html").symlink_to(partition / "data.parquet")
    return Reports(root, docs, gate, drift, outside)


def _url(path: Path) -> str:
    url = report_url(path)
    assert url is not None, path
    return url


def test_a_report_link_opens_for_an_authenticated_user(
    api: TestClient, token: str, reports: Reports
) -> None:
    docs_url = _url(reports.docs)
    relative = reports.docs.relative_to(reports.root).as_posix()
    assert docs_url == f"{BASE}{URL_PREFIX}/{relative}"
    answer = api.get(docs_url, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.text == reports.docs.read_text()
    assert answer.headers["content-security-policy"].startswith("sandbox")
    assert answer.headers["x-content-type-options"] == "nosniff"

    # The UI's session cookie is enough (what an approver's browser sends).
    api.cookies.set("_token", token)
    try:
        by_cookie = api.get(_url(reports.gate))
    finally:
        api.cookies.clear()
    assert by_cookie.status_code == 200, by_cookie.text
    assert by_cookie.headers["content-type"] == "application/json"
    assert by_cookie.json() == json.loads(reports.gate.read_text())

    # A name that needs quoting (a space) round-trips through the builder and the route.
    drift_url = _url(reports.drift)
    assert "%20" in drift_url
    drift = api.get(drift_url, headers={"Authorization": f"Bearer {token}"})
    assert drift.status_code == 200 and drift.text == reports.drift.read_text()


def test_anonymous_and_invalid_tokens_are_refused_before_any_path_is_looked_at(
    api: TestClient, reports: Reports
) -> None:
    for path in (_url(reports.docs), f"{URL_PREFIX}/no/such/report.html", f"{URL_PREFIX}/%2e%2e/x"):
        assert api.get(path).status_code == 401, path
        invalid = api.get(path, headers={"Authorization": "Bearer not-a-jwt"})
        assert invalid.status_code == 403, path
        assert "Data Docs" not in invalid.text


@pytest.mark.parametrize(
    "path",
    [
        "%2e%2e/secret.html",  # ../ encoded: the decoded path has a ".." segment
        "churn/%2e%2e/%2e%2e/secret.html",
        "..%2fsecret.html",
        "%2Fetc%2Fpasswd.json",  # an absolute path after the prefix
        "/etc/hostname.json",  # ...as a double slash
        "churn/partition=20261130T000000/validation/data_docs/%2e/index.html",  # "." segment
        "escape.html",  # a symlink to a file outside the root
        "monitoring/escape-dir/secret.html",  # through a symlinked directory
        "churn/rows.html",  # a symlink in the root to a data file, under a report's name
        "churn/partition=20261130T000000/data.parquet",  # data, not a report
        "ledger/churn-deployments.jsonl",
        ".hidden.json",
        "churn/partition=20261130T000000/results",  # a directory
        "churn/partition=20261130T000000/results/missing.json",
        "",
    ],
)
def test_nothing_outside_the_reports_is_served(
    api: TestClient, token: str, reports: Reports, path: str
) -> None:
    answer = api.get(f"{URL_PREFIX}/{path}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 404, (path, answer.status_code, answer.text)
    assert "not a report of this pipeline" not in answer.text
    assert "PAR1" not in answer.text


def test_read_only(api: TestClient, token: str, reports: Reports) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    before = reports.gate.read_text()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = api.request(method, _url(reports.gate), headers=headers, content=b"{}")
        assert answer.status_code == 405, method
    assert reports.gate.read_text() == before


def test_without_an_airflow_url_the_link_is_the_path_and_says_why(
    reports: Reports, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLOPS_AIRFLOW_URL")
    settings = load_settings()
    assert report_url(reports.docs, settings) is None
    text = report_link(reports.docs, settings)
    assert text is not None
    assert text.startswith(str(reports.docs)) and "MLOPS_AIRFLOW_URL" in text
    # With a URL, only report files under the data root become links.
    linked = dataclasses.replace(settings, airflow_url=BASE)
    assert report_link(reports.outside, linked) == (
        f"{reports.outside} (not a report file under {settings.data_root}: no link)"
    )
    parquet = reports.docs.parents[2] / "data.parquet"
    assert url_for_report(parquet, data_root=settings.data_root, airflow_url=BASE) is None
    assert report_link(None, linked) is None


def test_the_drift_event_carries_the_report_url_beside_its_path(
    api: TestClient, token: str, reports: Reports
) -> None:
    window = reports.drift.parent
    (window / "monitoring.json").write_text("{}")
    result = {
        "model_name": "churn",
        "champion_version": "1",
        "window": {"start": "2026-11-30T00:00:00+00:00", "end": "2026-11-30T01:00:00+00:00"},
        "reasons": ["data drift"],
        "drifted_columns": ["tenure"],
        "drift_share": 0.5,
        "prediction_drift_score": 0.2,
        "performance": {"degraded": False, "labeled_rows": 0, "labels": {"join_rate": 0.0}},
        "reports": {
            "data_drift_html": str(reports.drift),
            "dir": str(window),
            "result_json": str(window / "monitoring.json"),
            "mlflow_run_url": None,
        },
        "mlflow_run_id": "run",
    }
    extra = asset_extra(result)
    assert extra["report"] == str(reports.drift)
    headers = {"Authorization": f"Bearer {token}"}
    opened = api.get(extra["report_url"], headers=headers)
    assert opened.status_code == 200 and opened.text == reports.drift.read_text()
    assert api.get(extra["result_url"], headers=headers).json() == {}


def test_reports_on_an_object_store_data_root_are_read_from_the_store(
    api: TestClient,
    token: str,
    reports: Reports,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLOPS_DATA_ROOT=s3://...: the steps publish their reports to the store (their working
    copies are gone), and the same links open from there; the same paths are refused."""
    import boto3
    import requests

    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="plane")
    for path in (
        reports.docs,
        reports.gate,
        reports.root / "churn/partition=20261130T000000/data.parquet",
    ):
        key = f"pipeline/{path.relative_to(reports.root).as_posix()}"
        s3.put_object(Bucket="plane", Key=key, Body=path.read_bytes())
    links = {path: _url(path) for path in (reports.docs, reports.gate)}  # as a step made them
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://plane/pipeline")
    get_settings.cache_clear()
    headers = {"Authorization": f"Bearer {token}"}
    for path, link in links.items():
        answer = api.get(link, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.content == path.read_bytes()
    # What the steps record on an object-store data root (results, version tags) are the
    # reports' URIs in the store: the same links.
    uri = f"s3://plane/pipeline/{reports.gate.relative_to(reports.root).as_posix()}"
    assert report_url(uri) == links[reports.gate]
    docs = api.get(links[reports.docs], headers=headers)
    assert docs.headers["content-type"] == "text/html; charset=utf-8"
    assert docs.headers["content-security-policy"].startswith("sandbox")
    for refused in ("churn/partition=20261130T000000/data.parquet", "%2e%2e/pipeline/x.json",
                    "churn/partition=20261130T000000/results/missing.json"):  # fmt: skip
        assert api.get(f"{URL_PREFIX}/{refused}", headers=headers).status_code == 404, refused

    with socket.socket() as probe:  # a store nothing answers for
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{probe.getsockname()[1]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    down = api.get(links[reports.gate], headers=headers)
    assert down.status_code == 503 and "unreachable" in down.text
