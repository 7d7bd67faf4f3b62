"""Each task's metrics, the derived row id, the paired bootstrap of any primary metric and the
gate's MetricThreshold semantics for metrics where lower is better."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

from mlops_steps.common.metrics import (
    ROW_ID_COLUMN,
    _weighted_metric,
    encode_labels,
    paired_bootstrap_delta,
    split_frame,
    with_row_ids,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import Feature, GateCheck, ModelContract
from mlops_steps.core.policies import GateThresholds
from mlops_steps.training.gate import GateChecksInvalid, evaluate_gate, review_reasons

CHURN = load_contract("churn")


def _contract(task: str, **changes: object) -> ModelContract:
    base = ModelContract(
        name="m",
        task=task,  # type: ignore[arg-type]
        label="y",
        features=(Feature("a", "float"), Feature("b", "category", categories=("u", "v"))),
        primary_metric={"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}[task],
        gate=(),
        classes={"binary": (0, 1), "multiclass": ("x", "y", "z"), "regression": ()}[task],
        positive_class=1 if task == "binary" else None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_derived_row_ids_are_stable_and_tell_duplicates_apart() -> None:
    contract = _contract("regression")
    frame = pd.DataFrame(
        {"a": [1.0, 2.0, 1.0, np.nan], "b": ["u", "v", "u", None], "y": [1, 2, 1, 3]}
    )
    ids = with_row_ids(frame, contract)[ROW_ID_COLUMN]
    assert ids.is_unique and ids[2] == f"{ids[0]}.1"  # the same row twice: told apart by order
    shuffled = with_row_ids(frame.iloc[[3, 1, 0, 2]], contract)
    assert dict(zip(shuffled.index, shuffled[ROW_ID_COLUMN], strict=True)) == dict(ids.items())
    # The same values read as integers (a CSV) or floats (a Parquet file): the same ids.
    as_float = frame.astype({"y": float})
    assert with_row_ids(as_float, contract)[ROW_ID_COLUMN].tolist() == ids.tolist()
    assert with_row_ids(frame.assign(y=[1, 2, 1, 4]), contract)[ROW_ID_COLUMN][3] != ids[3]
    # A contract with its own id column keeps the frame as it is.
    assert with_row_ids(frame, dataclasses.replace(contract, id_column="a")) is frame


def test_derived_ids_are_the_row_hash_in_hex_numbered_by_occurrence() -> None:
    """On a real table with repeated rows: each id is the row's hash as 16 hex digits, a repeat
    gets ``.<n>`` in order of occurrence; a category column gives the ids of its text."""
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    frame = pd.concat([wine, wine.head(30), wine.head(3)], ignore_index=True)
    features = [c for c in frame.columns if c != "target"]
    contract = _contract(
        "regression", label="target", features=tuple(Feature(c, "float") for c in features)
    )
    hashes = pd.util.hash_pandas_object(frame[[*features, "target"]].astype(float), index=False)
    text = pd.Series([f"{h:016x}" for h in hashes])
    seen = text.groupby(text).cumcount()
    expected = text.where(seen == 0, text + "." + seen.astype(str))
    ids = with_row_ids(frame, contract)[ROW_ID_COLUMN]
    assert ids.tolist() == expected.tolist()
    assert ids[len(wine) + 30] == f"{ids[0]}.2"

    contract = _contract("regression")
    plain = pd.DataFrame({"a": [1.0, 2.0, 1.0], "b": ["u", "v", "u"], "y": [1, 2, 1]})
    lean = plain.astype({"b": "category"})
    assert with_row_ids(lean, contract)[ROW_ID_COLUMN].tolist() == (
        with_row_ids(plain, contract)[ROW_ID_COLUMN].tolist()
    )


def test_the_split_on_derived_ids_ignores_row_order() -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    contract = _contract(
        "regression",
        label="target",
        features=tuple(Feature(c, "float") for c in frame.columns if c != "target"),
    )
    a = split_frame(with_row_ids(frame, contract), ROW_ID_COLUMN)
    b = split_frame(with_row_ids(frame.sample(frac=1.0, random_state=1), contract), ROW_ID_COLUMN)
    assert set(a.holdout[ROW_ID_COLUMN]) == set(b.holdout[ROW_ID_COLUMN])
    assert 0.1 < len(a.holdout) / len(frame) < 0.2


def test_labels_are_encoded_by_the_contracts_classes() -> None:
    binary = _contract("binary", classes=(1, 0), positive_class=0)  # 0 is the positive class
    assert encode_labels([0, 1, 1.0, 0], binary).tolist() == [1, 0, 0, 1]
    multiclass = _contract("multiclass")
    assert encode_labels(["z", "x", "y"], multiclass).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="not in classes"):
        encode_labels(["x", "w"], multiclass)


@pytest.mark.parametrize(
    ("task", "metric", "reference"),
    [
        ("binary", "log_loss", lambda y, p, w: log_loss(y, p, sample_weight=w)),
        ("binary", "accuracy", lambda y, p, w: accuracy_score(y, p >= 0.5, sample_weight=w)),
        ("binary", "f1", lambda y, p, w: f1_score(y, p >= 0.5, sample_weight=w)),
        ("multiclass", "log_loss", lambda y, p, w: log_loss(y, p, sample_weight=w)),
        ("multiclass", "accuracy",
         lambda y, p, w: accuracy_score(y, p.argmax(1), sample_weight=w)),
        ("multiclass", "macro_f1",
         lambda y, p, w: f1_score(y, p.argmax(1), average="macro", sample_weight=w)),
        ("regression", "rmse",
         lambda y, p, w: np.sqrt(mean_squared_error(y, p, sample_weight=w))),
        ("regression", "mae", lambda y, p, w: mean_absolute_error(y, p, sample_weight=w)),
        ("regression", "r2", lambda y, p, w: r2_score(y, p, sample_weight=w)),
    ],
)  # fmt: skip
def test_weighted_metrics_match_sklearn(task: str, metric: str, reference: object) -> None:
    rng = np.random.default_rng(3)
    rows = 2_000
    labels: np.ndarray
    if task == "binary":
        labels = rng.integers(0, 2, rows)
        outputs = np.clip(0.3 * labels + 0.7 * rng.random(rows), 0.01, 0.99)
    elif task == "multiclass":
        labels = rng.integers(0, 3, rows)
        logits = rng.normal(size=(rows, 3)) + 1.5 * np.eye(3)[labels]
        outputs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    else:
        labels = rng.normal(100, 20, rows)
        outputs = labels + rng.normal(0, 10, rows)
    weights = rng.poisson(1.0, (2, rows)).astype(float)
    got = _weighted_metric(metric, task, labels, outputs)(weights)
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(reference(labels, outputs, row), rel=1e-9)  # type: ignore[operator]


def test_paired_bootstrap_of_a_loss_sees_the_better_model() -> None:
    rng = np.random.default_rng(1)
    labels = rng.normal(0, 1, 3_000)
    good, bad = labels + rng.normal(0, 0.5, 3_000), labels + rng.normal(0, 1.0, 3_000)
    result = paired_bootstrap_delta("rmse", "regression", labels, good, bad, resamples=200)
    assert result["rmse_delta_ci_high"] < 0  # lower is better: the challenger is better
    same = paired_bootstrap_delta("r2", "regression", labels, good, good, resamples=50)
    assert same["r2_delta_ci_low"] == same["r2_delta_ci_high"] == 0


def _regression_evaluation(rmse: float, champion: float | None) -> dict:
    evaluation: dict = {
        "challenger": {"rmse": rmse, "mae": 40.0, "r2": 0.4, "latency_p95_ms": 1.0},
        "champion": None,
    }
    if champion is not None:
        evaluation["champion"] = {"version": "2", "rmse": champion, "training_rmse": 50.0}
    return evaluation


def test_gate_on_a_lower_is_better_metric() -> None:
    contract = _contract(
        "regression",
        gate=(GateCheck("rmse", False, threshold=60.0, min_relative_change=-0.05),),
    )
    failed = lambda e: {c["check"] for c in evaluate_gate(e, GateThresholds(), contract)  # noqa: E731
                        if not c["passed"]}  # fmt: skip
    assert failed(_regression_evaluation(55.0, None)) == set()
    assert failed(_regression_evaluation(61.0, None)) == {"max_rmse"}
    # May be up to 5 % worse than the champion's 54: 56.7 at most.
    assert failed(_regression_evaluation(56.0, 54.0)) == set()
    assert failed(_regression_evaluation(57.0, 54.0)) == {"max_rmse_relative_rise_vs_champion"}
    # The champion's RMSE rose from 50 at training to 80 now: a collapse of 30 > 20.
    (reason,) = review_reasons(
        _regression_evaluation(55.0, 80.0), GateThresholds(max_champion_collapse=20), contract
    )
    assert "RMSE 50 at training -> 80 now (a rise of 30 > max_champion_collapse 20)" in reason
    assert (
        review_reasons(
            _regression_evaluation(55.0, 60.0), GateThresholds(max_champion_collapse=20), contract
        )
        == []
    )


def test_a_runs_checks_replace_the_contracts() -> None:
    evaluation = {"challenger": {"auc": 0.86, "accuracy": 0.81, "latency_p95_ms": 5.0},
                  "champion": None}  # fmt: skip
    strict = GateThresholds(checks='[{"metric": "auc", "threshold": 0.9}]')
    checks = evaluate_gate(evaluation, strict, CHURN)
    assert [(c["check"], c["passed"]) for c in checks] == [
        ("min_auc", False),
        ("max_latency_ms", True),
    ]
    for text, message in [
        ("[{", "is not JSON"),
        ("{}", "non-empty JSON list"),
        ('[{"metric": "rmse", "threshold": 1}]', "'rmse' is not a binary metric"),
        ('[{"metric": "auc"}]', "checks nothing"),
        ('[{"metric": "auc", "threshold": "high"}]', "'high' is not a number"),
        ('[{"metric": "auc", "min_auc": 0.8}]', "unknown keys ['min_auc']"),
        ('[{"metric": "log_loss", "threshold": 0.5, "greater_is_better": true}]',
         "log_loss is better lower"),
    ]:  # fmt: skip
        with pytest.raises(GateChecksInvalid, match="--checks") as info:
            evaluate_gate(evaluation, GateThresholds(checks=text), CHURN)
        assert message in str(info.value), text
    with pytest.raises(GateChecksInvalid, match="no gate checks"):
        evaluate_gate(evaluation, GateThresholds(), dataclasses.replace(CHURN, gate=()))
