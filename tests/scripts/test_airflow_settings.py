"""airflow_settings.yaml declares every connection, pool and variable the project uses, and the
loader (scripts/airflow_settings.py) applies it the way `astro dev start` would."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

import airflow_settings
from airflow_settings import SettingsFileError
from tests.dags.helpers import load_dags
from tests.settings_names import names_read_by_core

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("dags", "plugins", "provider", "include")
DECLARED = airflow_settings.load()


def _sources() -> dict[Path, str]:
    return {
        path: path.read_text()
        for directory in CODE_DIRS
        for path in (REPO / directory).rglob("*.py")
    }


def _conn_id_fields(value: Any) -> set[str]:
    """Every ``*_conn_id`` field of the settings, through the nested dataclasses."""
    found: set[str] = set()
    for item in dataclasses.fields(value):
        attribute = getattr(value, item.name)
        if item.name.endswith("conn_id"):
            found.add(attribute)
        elif dataclasses.is_dataclass(attribute):
            found |= _conn_id_fields(attribute)
    return found


@pytest.fixture(scope="module")
def all_tasks() -> list[Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return [
            task
            for runner in ("local", "kubernetes")
            for dag in load_dags(monkeypatch, runner).values()
            for task in dag.tasks
        ]


def test_every_connection_the_code_uses_is_declared(all_tasks: list[Any]) -> None:
    from mlops_steps.contract.loader import model_names
    from mlops_steps.core.settings import load_settings

    used = _conn_id_fields(load_settings())
    for task in all_tasks:  # what operators, sensors and local steps were built with
        used |= {
            getattr(task, name)
            for name in dir(task)
            if name.endswith("conn_id") and isinstance(getattr(task, name, None), str)
        }
        used |= {
            conn_id
            for candidates in getattr(task, "secret_connections", {}).values()
            for conn_id, _ in candidates
        }
    literal = re.compile(
        r"""(?:CONN_ID|conn_id|default_conn_name)\s*[:=]\s*(?:str\s*=\s*)?"(\w+)\""""
    )
    for text in _sources().values():
        used |= set(literal.findall(text))
    assert "mlflow_webhook" in used and "ci_build" in used and "aws_default" in used
    # A model's own serving connection (mlops_serving__<model>) is optional: it is added with a
    # model that has a service of its own (the demo's second model); without it the release
    # steps use the declared deployment-wide mlops_serving.
    per_model = {
        load_settings().for_model(name).deploy.model_serving_conn_id for name in model_names()
    }
    assert per_model == {"mlops_serving__churn"} and per_model <= used
    used -= per_model
    declared = {c.conn_id for c in DECLARED.connections}
    assert used - declared == set(), f"declare in airflow_settings.yaml: {used - declared}"
    assert declared - used == set(), f"declared but never used: {declared - used}"


def test_every_pool_the_dags_use_is_declared(all_tasks: list[Any]) -> None:
    used = {task.pool for task in all_tasks} - {"default_pool"}
    declared = {pool.name: pool for pool in DECLARED.pools}
    assert used == set(declared) == {"mlops_promotion__churn"}
    assert declared["mlops_promotion__churn"].slots == 1  # releases never interleave


def test_every_variable_is_declared_and_read_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops_steps.core.settings import load_settings

    for name in DECLARED.variables:
        assert name.startswith("mlops_"), name
        assert name.upper() in names_read_by_core(), f"{name}: core/ reads no {name.upper()}"
    # Variables referenced directly by code (templates, Variable.get, env) are declared too.
    referenced: set[str] = set()
    for text in _sources().values():
        referenced |= set(re.findall(r"var\.value(?:\.get\(['\"]|\.)(\w+)", text))
        referenced |= set(re.findall(r"Variable\.get\(\s*['\"](\w+)", text))
        referenced |= {v.lower() for v in re.findall(r"AIRFLOW_VAR_([A-Z0-9_]+)", text)}
    referenced.discard("mlops_x")  # the docstring's example
    assert referenced <= set(DECLARED.variables), referenced - set(DECLARED.variables)
    # The declared values are the local defaults: exporting them changes nothing locally...
    defaults = load_settings()
    for key, value in DECLARED.variables_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == defaults
    # ...and each one is really read (a changed Variable changes the settings).
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_TASK_IMAGE", "registry.example.com/task:9")
    assert load_settings().kubernetes.task_image == "registry.example.com/task:9"


def test_bad_files_are_refused_naming_the_entry(tmp_path: Path) -> None:
    cases = {
        "connections: [{conn_type: http}]": "connections[0]: every connection needs a conn_id",
        "connections: [{conn_id: x}]": "(x): conn_type is required",
        "connections: [{conn_id: x, conn_type: http, conn_hots: h}]": "unknown key(s) ['conn_ho",
        "connections: [{conn_id: x, conn_type: http, conn_port: web}]": "'web' is not a port",
        "connections: [{conn_id: x, conn_type: http, conn_extra: '{bad'}]": "is not JSON",
        "pools: [{pool_name: p, pool_slot: 0}]": "(p): pool_slot must be an integer >= 1",
        "variables: [{variable_value: 1}]": "variables[0] needs a variable_name",
        "connections: [{conn_id: x, conn_type: http}, {conn_id: x, conn_type: http}]": (
            "duplicate conn_id(s) ['x']"
        ),
    }
    for body, message in cases.items():
        path = tmp_path / "airflow_settings.yaml"
        path.write_text(f"airflow:\n  {body}\n")
        with pytest.raises(SettingsFileError) as raised:
            airflow_settings.load(path)
        assert message in str(raised.value), (body, str(raised.value))
    path.write_text("astro: {}\n")
    with pytest.raises(SettingsFileError, match="top-level 'airflow:'"):
        airflow_settings.load(path)


def test_apply_creates_what_is_missing_and_keeps_what_was_edited(airflow_db: Path) -> None:
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    first = airflow_settings.apply(DECLARED)
    assert "connection mlflow_default: created" in first
    assert "pool mlops_promotion__churn: 1 slot(s)" in first
    with create_session() as session:
        smtp = session.query(Connection).filter_by(conn_id="smtp_alerts").one()
        assert (smtp.host, smtp.port) == ("smtp.example.com", 587)
        assert smtp.extra_dejson["to"] == "ml-oncall@example.com"
        smtp.host = "smtp.internal"  # an operator edits it in the UI
        assert session.query(Pool).filter_by(pool="mlops_promotion__churn").one().slots == 1
    again = airflow_settings.apply(DECLARED)
    assert "connection smtp_alerts: kept (already set)" in again
    with create_session() as session:
        assert session.query(Connection).filter_by(conn_id="smtp_alerts").one().host == (
            "smtp.internal"
        )
    replaced = airflow_settings.apply(DECLARED, overwrite=True)
    assert "connection smtp_alerts: replaced" in replaced
    with create_session() as session:
        assert session.query(Connection).filter_by(conn_id="smtp_alerts").one().host == (
            "smtp.example.com"
        )
        assert session.query(Connection).filter_by(conn_id="smtp_alerts").count() == 1
