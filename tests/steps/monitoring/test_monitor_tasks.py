"""Monitoring a multiclass model (scikit-learn's wine table) and a regressor (its diabetes
table) on prediction logs written as the service writes them (interface 3): the feature drift,
the prediction drift on the class mix and on the value, a nullable feature's nulls, and the
performance check on labelled traffic with the task's primary metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_steps.common.drift import data_drift, prediction_drift
from mlops_steps.common.labels import LabelsError
from mlops_steps.common.predictions import check_features, read_window
from mlops_steps.common.window import NullFeatureValues, Window
from mlops_steps.contract.loader import parse_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.policies import DriftPolicy, PerformancePolicy
from mlops_steps.monitoring.performance import performance
from mlops_steps.monitoring.reference import Champion, features_of
from tests.steps.monitoring.helpers import window, write_log


def _contract(tmp_path: Path, name: str, frame: pd.DataFrame, label: str, **more: Any) -> Any:
    document = {
        "name": name,
        "id_column": "row_id",
        "label": label,
        "features": [
            {"name": c, "kind": "float", **({"nullable": True} if c == "nullable_one" else {})}
            for c in frame.columns
            if c not in (label, "row_id")
        ],
        **more,
    }
    primary = "rmse" if document.get("task") == "regression" else "accuracy"
    document.setdefault("gate", {"checks": [{"metric": primary, "threshold": 0.5}]})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return parse_contract(yaml.safe_load(path.read_text()), path)


def _split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])
    half = len(frame) // 2
    return frame.iloc[:half].reset_index(drop=True), frame.iloc[half:].reset_index(drop=True)


def _served(
    tmp_path: Path,
    hour: int,
    contract: ModelContract,
    frame: pd.DataFrame,
    *,
    scores: np.ndarray,
    classes: list[str] | None = None,
) -> tuple[Any, Any]:
    log = tmp_path / f"log{hour}"
    start, end = window(hour)
    write_log(log, frame, scores, start=start, features=contract.feature_names,
              id_column="row_id", classes=classes)  # fmt: skip
    spec = contract.feature_spec()
    kinds = features_of(spec)
    served = read_window(str(log), Window(start, end), kinds)
    return served, kinds


def _champion(tags: dict[str, float]) -> Champion:
    return Champion("m", "1", "run", {f"mlops.holdout_{k}": str(v) for k, v in tags.items()})


def _labels(directory: Path, frame: pd.DataFrame, label: str, values: Any = None) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"entity_id": frame["row_id"], label: frame[label] if values is None
                          else values})  # fmt: skip
    table.to_csv(directory / "labels.csv", index=False)
    return str(directory)


@pytest.fixture(scope="module")
def wine() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True).frame
    data["target"] = data["target"].map(lambda v: f"class_{v}")
    data = pd.concat([data] * 6, ignore_index=True)  # 1,068 rows: enough for the tests
    return _split(data)


def test_multiclass_class_mix_drift_nullable_feature_and_performance(
    wine: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference, current = wine
    reference, current = reference.copy(), current.copy()
    for frame in (reference, current):  # a feature the contract lets be missing
        frame["nullable_one"] = frame["alcohol"].where(frame.index % 3 != 0)
    contract = _contract(tmp_path, "wine", reference, "target",
                         task="multiclass", classes=["class_0", "class_1", "class_2"],
                         metrics={"primary": "log_loss"})  # fmt: skip
    names = list(contract.feature_names)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(reference[names].fillna(0), reference["target"])
    assert list(model.classes_) == list(contract.class_labels)

    def answers(frame: pd.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
        proba = model.predict_proba(frame[names].fillna(0))
        picked = [contract.class_labels[i] for i in proba.argmax(axis=1)]
        return proba.max(axis=1), picked, picked

    scores, classes, ref_classes = answers(current)[0], answers(current)[1], answers(reference)[1]
    served, kinds = _served(tmp_path, 50, contract, current, scores=scores, classes=classes)
    assert served.meta["class"].tolist() == classes
    # A nullable feature is null in a third of the rows: no failure, and it is judged.
    ref_checked = check_features(reference, kinds, source="ref", max_null_share=0.0)
    checked = check_features(served.features, kinds, source="log", max_null_share=0.0)
    assert checked["nullable_one"].isna().sum() == (current.index % 3 == 0).sum()
    strict = {**kinds, "nullable_one": type(kinds["alcohol"])("nullable_one", "float")}
    with pytest.raises(NullFeatureValues, match="'nullable_one' is null in"):
        check_features(served.features, strict, source="log", max_null_share=0.0)
    fresh = data_drift(ref_checked, checked, kinds, DriftPolicy())
    assert "nullable_one" in {c["column"] for c in fresh["columns"]}
    assert not fresh["detected"], fresh["drifted_columns"]

    # The class mix: the same mix is no drift; a window of one class is.
    same = prediction_drift(pd.Series(ref_classes), served.meta["class"], DriftPolicy(),
                            "multiclass")  # fmt: skip
    assert same["column"] == "class" and not same["detected"], same
    assert set(same["current_mix"]) == set(contract.class_labels)
    only_zero = current[current["target"] == "class_0"]
    shifted = prediction_drift(pd.Series(ref_classes), pd.Series(answers(only_zero)[1]),
                               DriftPolicy(), "multiclass")  # fmt: skip
    assert shifted["detected"] and shifted["current_mix"].get("class_0", 0) > 0.9

    # Performance: accuracy and macro-F1 of the logged class (log_loss needs every class's
    # probability, which the log does not keep).
    truth = _labels(tmp_path / "labels", current, "target")
    policy = PerformancePolicy(min_labeled_rows=100)
    champion = _champion({"macro_f1": 0.97, "accuracy": 0.97})
    perf = performance(served.meta, champion, truth, policy, contract, cutoff=None)
    assert perf["judged"] and perf["reason"] is None
    assert (
        perf["judged_metrics"] == ["macro_f1", "accuracy"] and perf["primary_metric"] == "log_loss"
    )
    assert perf["accuracy"] > 0.9 and not perf["degraded"]
    rotated = current["target"].map({"class_0": "class_1", "class_1": "class_2",
                                     "class_2": "class_0"})  # fmt: skip
    wrong = _labels(tmp_path / "wrong", current, "target", rotated)
    perf = performance(served.meta, champion, wrong, policy, contract, cutoff=None)
    assert perf["degraded"] and perf["accuracy"] < 0.1
    unknown = _labels(tmp_path / "unknown", current, "target", ["class_9"] * len(current))
    with pytest.raises(LabelsError, match="not classes of model wine"):
        performance(served.meta, champion, unknown, policy, contract, cutoff=None)


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True, scaled=False).frame
    return _split(pd.concat([data] * 3, ignore_index=True))


def test_regression_value_drift_feature_drift_and_rmse(
    diabetes: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression

    reference, current = diabetes
    contract = _contract(tmp_path, "diabetes", reference, "target", task="regression")
    names = list(contract.feature_names)
    model = LinearRegression().fit(reference[names], reference["target"])
    holdout_rmse = float(np.sqrt(np.mean((model.predict(reference[names]) -
                                          reference["target"]) ** 2)))  # fmt: skip

    values = model.predict(current[names])
    served, kinds = _served(tmp_path, 51, contract, current, scores=values)
    ref_checked = check_features(reference, kinds, source="ref", max_null_share=0.0)
    checked = check_features(served.features, kinds, source="log", max_null_share=0.0)
    assert not data_drift(ref_checked, checked, kinds, DriftPolicy())["detected"]
    ref_values = model.predict(reference[names])
    same = prediction_drift(ref_values, served.meta["score"], DriftPolicy(), "regression")
    assert same["column"] == "value" and not same["detected"], same

    heavier = current.assign(bmi=current["bmi"] + 8.0)  # a population eight BMI points heavier
    moved, _ = _served(tmp_path, 52, contract, heavier, scores=model.predict(heavier[names]))
    moved_checked = check_features(moved.features, kinds, source="log", max_null_share=0.0)
    drifted = data_drift(ref_checked, moved_checked, kinds, DriftPolicy())
    assert "bmi" in drifted["drifted_columns"]
    value_drift = prediction_drift(ref_values, moved.meta["score"], DriftPolicy(), "regression")
    assert value_drift["detected"] and value_drift["current_mean"] > value_drift["reference_mean"]

    truth = _labels(tmp_path / "labels", current, "target")
    policy = PerformancePolicy(min_labeled_rows=100)
    perf = performance(served.meta, _champion({"rmse": holdout_rmse}), truth, policy, contract,
                       cutoff=None)  # fmt: skip
    assert perf["judged"] and perf["judged_metrics"] == ["rmse"]
    assert perf["limits"]["rmse"]["bound"] == "relative"
    assert perf["degraded"] is (perf["rmse"] > holdout_rmse * 1.1)
    # Labels 60 higher than what happened: the error grows far beyond 10 %.
    off = _labels(tmp_path / "off", current, "target", current["target"] + 60)
    perf = performance(served.meta, _champion({"rmse": holdout_rmse}), off, policy, contract,
                       cutoff=None)  # fmt: skip
    assert perf["degraded"] and perf["rmse_drop"] > 0.1 * holdout_rmse
