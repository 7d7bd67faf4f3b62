"""The approval page's report links under a real Airflow API server (``airflow api-server`` on
loopback, started by scripts/local_airflow.py like the demo's): a challenger trained and
registered by the real steps, its approval page rendered from the resolve step's output, and the
Data Docs and gate links on that page opened as a person would, logged in or not.

One Airflow start (the API server alone: nothing here is scheduled); the training runs while the
server boots.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import requests

from local_airflow import LiveAirflow
from mlops_steps.core.report_links import URL_PREFIX
from processes import free_port
from tests.pipeline import train_and_register

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

READER = "reader"  # a SimpleAuthManager viewer: reading runs is all the route asks for


def _approval_page(candidate: dict[str, Any], model: str) -> str:
    """The HITL body the deployment DAG shows, rendered from ``candidate`` as Airflow renders it
    (strict undefined; ``ti.xcom_pull('resolve')`` returns the resolve step's output)."""
    from mlops_provider.pipelines.deployment import approval_body
    from mlops_steps.contract.loader import load_contract

    class TaskInstance:
        def xcom_pull(self, task_ids: str) -> dict[str, Any]:
            assert task_ids == "resolve"
            return candidate

    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        approval_body(load_contract(model))
    )
    return template.render(
        ti=TaskInstance(), params={"canary_steps": "5,25,50,100", "shadow_share": 0.0}
    )


def test_the_approval_pages_report_links_open_only_when_logged_in(
    tracking: str, mlops_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.core.settings import get_settings, load_settings
    from mlops_steps.release.deploy import run_resolve

    port = free_port()
    monkeypatch.setenv("MLOPS_AIRFLOW_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    (tmp_path / "dags").mkdir()
    airflow = LiveAirflow.configure(
        tmp_path / "airflow",
        dags_folder=tmp_path / "dags",
        port=port,
        users={READER: "viewer"},
        base_env=base_env,
        extra_env={"MLOPS_HOME": str(mlops_env)},  # the API server serves this data root
    )
    airflow.migrate()
    try:
        airflow.start(("api-server",))
        # The real steps while the server boots: Data Docs, gate report, a challenger.
        train_and_register("reports", "--seed", "1", gate_args=["--max-latency-ms", "1000"])
        candidate = run_resolve(load_settings(), None)
        airflow.wait_until_up(180)
        token = airflow.rest.login()
    except BaseException:
        airflow.stop()
        raise
    try:
        page = _approval_page(candidate, load_settings().model_name)
        found = re.search(r"Data Docs: (\S+)", page)
        assert found is not None, page
        docs_url = found.group(1)
        assert docs_url.startswith(f"{airflow.base_url}{URL_PREFIX}/"), page
        docs_file = load_settings().data_root / docs_url.split(f"{URL_PREFIX}/", 1)[1]
        assert docs_file.is_file() and docs_file.name == "index.html"

        bearer = {"Authorization": f"Bearer {token}"}
        opened = requests.get(docs_url, headers=bearer, timeout=30)
        assert opened.status_code == 200, opened.text[:500]
        assert opened.headers["content-type"] == "text/html; charset=utf-8"
        assert opened.content == docs_file.read_bytes()
        # The browser's way: the UI's session cookie.
        by_cookie = requests.get(docs_url, cookies={"_token": token}, timeout=30)
        assert by_cookie.status_code == 200 and by_cookie.content == docs_file.read_bytes()

        anonymous = requests.get(docs_url, timeout=30)
        assert anonymous.status_code == 401, anonymous.text[:500]
        forged = requests.get(docs_url, headers={"Authorization": "Bearer forged"}, timeout=30)
        assert forged.status_code == 403, forged.text[:500]
        assert docs_file.read_text()[:200] not in anonymous.text + forged.text

        gate_url = candidate["links"]["gate_report"]
        gate = requests.get(gate_url, headers=bearer, timeout=30)
        assert gate.status_code == 200 and gate.headers["content-type"] == "application/json"
        gate_file = load_settings().data_root / gate_url.split(f"{URL_PREFIX}/", 1)[1]
        assert gate.json() == json.loads(gate_file.read_text())
        assert gate.json()["decision"] == candidate["gate_decision"]
    finally:
        airflow.stop()
