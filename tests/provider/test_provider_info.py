"""The installed provider as Airflow's ProvidersManager sees it: found through the entry point,
its provider info valid against Airflow's schema, the MLflow connection type resolving to the
hook with its form, the notifier and the trigger module listed."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from importlib.resources import files

import jsonschema
import pytest
from airflow.providers_manager import ProvidersManager

from mlops_provider.get_provider_info import PACKAGE_NAME, get_provider_info
from mlops_provider.hooks.mlflow import MlflowHook


@pytest.fixture(scope="module")
def manager() -> ProvidersManager:
    return ProvidersManager()


def test_entry_point_points_at_get_provider_info() -> None:
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.dist is not None
                and e.dist.name == PACKAGE_NAME]  # fmt: skip
    assert entry.load() is get_provider_info


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_manager_resolves_the_mlflow_connection_type(manager: ProvidersManager) -> None:
    assert manager.providers[PACKAGE_NAME].version == get_provider_info()["versions"][0]
    hook = manager.hooks["mlflow"]
    assert hook is not None
    assert hook.hook_class_name == f"{MlflowHook.__module__}.{MlflowHook.__qualname__}"
    assert (hook.connection_type, hook.connection_id_attribute_name) == ("mlflow", "mlflow_conn_id")
    assert MlflowHook.conn_type == "mlflow"
    form = manager.field_behaviours["mlflow"]
    assert form["hidden_fields"] == ["extra"]
    assert form["relabeling"]["schema"] == "Scheme"
    assert form["placeholders"]["port"] == "5000"


def test_notifier_and_trigger_are_listed(manager: ProvidersManager) -> None:
    notifier = "mlops_provider.notifications.notifier.MlopsNotifier"
    assert any(notifier in str(listed) for listed in manager.notification)  # names, as listed
    triggers = {t.trigger_class_name for t in manager.trigger if t.package_name == PACKAGE_NAME}
    assert triggers == {"mlops_provider.triggers.registry"}
