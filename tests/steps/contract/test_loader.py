"""The contract loader on the real churn.yaml and on broken copies of it: every refusal names the
file, the key and a fix (it is the Airflow import error a user reads)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_steps.contract.loader import (
    ContractError,
    contract_path,
    load_all,
    load_contract,
    model_names,
    models_dir,
    read_yaml,
)

REPO = Path(__file__).resolve().parents[3]
CHURN = REPO / "models" / "churn.yaml"

_YES_NO = ["yes", "no"]
_YES_NO_NOINTERNET = ["yes", "no", "no_internet"]

# The spec the churn model logged when its contract was Python constants (contract/schema.py,
# before issue 14), with the keys the file-based contract adds: unseen per category feature,
# and model/task/classes/positive_class at the top.
PREVIOUS_CHURN_FEATURES: list[dict[str, Any]] = [
    {
        "name": "tenure_months",
        "kind": "integer",
        "minimum": 0,
        "maximum": 72,
        "description": "months as a customer",
    },
    {
        "name": "contract_type",
        "kind": "category",
        "categories": ["month_to_month", "one_year", "two_year"],
    },
    {
        "name": "monthly_charges",
        "kind": "float",
        "minimum": 15.0,
        "maximum": 130.0,
        "description": "current monthly bill",
    },
    {
        "name": "total_charges",
        "kind": "float",
        "minimum": 0.0,
        "maximum": 10000.0,
        "description": "billed over the tenure",
    },
    {"name": "internet_service", "kind": "category", "categories": ["dsl", "fiber_optic", "none"]},
    {"name": "phone_service", "kind": "category", "categories": _YES_NO},
    {"name": "online_security", "kind": "category", "categories": _YES_NO_NOINTERNET},
    {"name": "tech_support", "kind": "category", "categories": _YES_NO_NOINTERNET},
    {"name": "streaming_tv", "kind": "category", "categories": _YES_NO_NOINTERNET},
    {"name": "paperless_billing", "kind": "category", "categories": _YES_NO},
    {
        "name": "payment_method",
        "kind": "category",
        "categories": ["electronic_check", "mailed_check", "bank_transfer", "credit_card"],
    },
    {"name": "senior_citizen", "kind": "integer", "minimum": 0, "maximum": 1},
    {"name": "partner", "kind": "category", "categories": _YES_NO},
    {"name": "dependents", "kind": "category", "categories": _YES_NO},
    {
        "name": "support_calls_90d",
        "kind": "integer",
        "minimum": 0,
        "maximum": 30,
        "description": "support calls, last 90 days",
    },
    {
        "name": "avg_monthly_gb",
        "kind": "float",
        "minimum": 0.0,
        "maximum": 2000.0,
        "description": "mean data use per month",
    },
]


def test_churn_yaml_gives_the_spec_the_churn_model_always_logged() -> None:
    contract = load_contract("churn")
    assert contract.path == CHURN.resolve()
    expected = [
        {**f, "unseen": "reject"} if f["kind"] == "category" else f for f in PREVIOUS_CHURN_FEATURES
    ]
    assert contract.feature_spec() == {
        "version": 1,
        "model": "churn",
        "task": "binary",
        "id_column": "customer_id",
        "label_column": "churn",
        "features": expected,
        "classes": ["0", "1"],
        "positive_class": "1",
    }
    assert (contract.primary_metric, contract.greater_is_better) == ("auc", True)
    assert [c.to_dict() for c in contract.gate] == [
        {
            "metric": "auc",
            "greater_is_better": True,
            "threshold": 0.75,
            "min_absolute_change": -0.01,
        },
        {"metric": "accuracy", "greater_is_better": True, "threshold": 0.7},
    ]
    assert contract.slices == ("contract_type", "internet_service")


def test_yes_no_categories_stay_strings() -> None:
    # Under YAML 1.1 (PyYAML's default) `[yes, no]` would be [True, False].
    document = yaml.safe_load(CHURN.read_text())
    assert document["features"][5]["categories"] == [True, False]
    phone = load_contract("churn").features_by_name["phone_service"]
    assert phone.categories == ("yes", "no")


def _churn_document() -> dict[str, Any]:
    document = read_yaml(CHURN)
    assert isinstance(document, dict)
    return document


def _write(directory: Path, document: dict[str, Any], name: str = "churn") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _refusal(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    document = _churn_document()
    change(document)
    path = _write(tmp_path, document)
    with pytest.raises(ContractError) as caught:
        load_contract("churn", tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert "Fix:" in message
    return message


def test_a_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: broken\ntask: binary\nfeatures: [\n  {name: a\n")
    with pytest.raises(ContractError, match=r"broken\.yaml: is not valid YAML at line \d+"):
        load_contract("broken", tmp_path)


def test_a_schema_violation_names_the_key_path(tmp_path: Path) -> None:
    def kind_text(d: dict[str, Any]) -> None:
        d["features"][1]["kind"] = "text"

    assert "churn.yaml: features[1].kind: 'text' is not one of" in _refusal(tmp_path, kind_text)

    def unknown_key(d: dict[str, Any]) -> None:
        d["gate"]["max_latency"] = 10

    assert "churn.yaml: gate: Additional properties" in _refusal(tmp_path, unknown_key)


Change = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d[key] = value

    return change


def _feature(index: int, **values: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["features"][index].update(values)

    return change


def _check(**values: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d["gate"]["checks"] = [values]

    return change


def _no_checks(d: dict[str, Any]) -> None:
    d["gate"]["checks"] = []


def _override(section: str, **values: Any) -> Change:
    def change(d: dict[str, Any]) -> None:
        d[section] = values

    return change


def _multiclass_with_two(d: dict[str, Any]) -> None:
    d.update(task="multiclass", classes=[0, 1])
    d.pop("positive_class")
    d["metrics"]["primary"] = "log_loss"
    d["gate"]["checks"] = [{"metric": "log_loss", "threshold": 0.5}]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (_set("name", "attrition"), "name", "is 'attrition' but the file is churn.yaml"),
        (_set("label", "tenure_months"), "label", "'tenure_months' is also a feature"),
        (_set("classes", [0, 1, 2]), "classes", "a binary model has 2 classes, not 3"),
        (_multiclass_with_two, "classes", "lists its 3 or more classes"),
        (_set("metrics", {"primary": "rmse"}), "metrics.primary", "'rmse' is not a binary metric"),
        (_check(metric="r2", threshold=0.5), "gate.checks[0].metric", "not a binary metric"),
        (
            _check(metric="log_loss", threshold=0.5, greater_is_better=True),
            "gate.checks[0].greater_is_better",
            "log_loss is better lower",
        ),
        (_check(metric="auc"), "gate.checks[0]", "checks nothing"),
        (_no_checks, "gate.checks", "any challenger would pass"),
        (
            _override("training", learning_rat=0.1),
            "training.learning_rat",
            "is not a setting of this section",
        ),
        (_override("canary", steps="50,40,100"), "canary.steps", "must increase"),
        (_override("canary", steps="100"), "canary.steps", "judge nothing"),
        (_override("training", learning_rate=0), "training.learning_rate", "0"),
        (_set("slices", ["tenure_months"]), "slices[0]", "is not a category feature"),
        (
            _feature(0, limits={"min": 0, "max": 72}, expected={"min": 0, "max": 100}),
            "features[0].expected",
            "reaches beyond the hard limits",
        ),
        (_feature(0, limits={"min": 72, "max": 0}), "features[0].limits", "min 72 is above max"),
        (_feature(1, categories=["a"], unseen="nope"), "features[1].unseen", "is not one of"),
        (_feature(0, unseen="missing"), "features[0].unseen", "only category features"),
        (_set("positive_class", 2), "positive_class", "2 is not in classes"),
    ],
)
def test_each_refusal_names_the_file_the_key_and_the_fix(
    tmp_path: Path, change: Change, key: str, words: str
) -> None:
    message = _refusal(tmp_path, change)
    assert f"churn.yaml: {key}: " in message
    assert words in message


def test_a_missing_model_lists_the_models_there(tmp_path: Path) -> None:
    _write(tmp_path, _churn_document())
    with pytest.raises(ContractError, match=r"no contract for model 'iris' \(models here: churn\)"):
        load_contract("iris", tmp_path)


def test_models_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _churn_document()
    _write(tmp_path, {**document, "name": "attrition"}, name="attrition")
    (tmp_path / "_draft.yaml").write_text("not: a contract\n")
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
    assert contract_path("attrition") == tmp_path / "attrition.yaml"
    assert model_names() == ["attrition"]  # files starting with _ wait as drafts
    assert [c.name for c in load_all()] == ["attrition"]
    with pytest.raises(ContractError, match="no contract for model 'churn'"):
        load_contract("churn")
    monkeypatch.delenv("MLOPS_MODELS_DIR")
    assert "churn" in model_names()


def test_the_cache_follows_the_file(tmp_path: Path) -> None:
    document = _churn_document()
    path = _write(tmp_path, document)
    first = load_contract("churn", tmp_path)
    assert load_contract("churn", tmp_path) is first
    document["features"][0]["limits"]["max"] = 80
    _write(tmp_path, document)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = load_contract("churn", tmp_path)
    assert second.features_by_name["tenure_months"].maximum == 80.0
    assert first.features_by_name["tenure_months"].maximum == 72.0
    assert first.fingerprint() != second.fingerprint()


def test_overrides_apply_to_policies_and_keep_their_types(tmp_path: Path) -> None:
    from mlops_steps.core.policies import TrainParams, ValidationPolicy

    document = _churn_document()
    document["training"] = {"min_data_in_leaf": 7, "learning_rate": 0.1}
    document["validation"] = {"min_rows": 100}
    _write(tmp_path, document)
    contract = load_contract("churn", tmp_path)
    params = contract.policy("training", TrainParams())
    assert (params.min_data_in_leaf, params.learning_rate, params.num_leaves) == (7, 0.1, 31)
    assert contract.policy("validation", ValidationPolicy()).min_rows == 100
    assert load_contract("churn").policy("training", TrainParams()) == TrainParams()


def test_the_schema_rejects_a_name_that_cannot_be_a_dag_id(tmp_path: Path) -> None:
    document = {**_churn_document(), "name": "Churn-V2"}
    _write(tmp_path, document, name="Churn-V2")
    with pytest.raises(ContractError, match=re.escape("Churn-V2.yaml: name: 'Churn-V2' does not")):
        load_contract("Churn-V2", tmp_path)
