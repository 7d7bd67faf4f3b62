from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops_steps.common.metrics import (
    _weighted_aucs,
    classification_metrics,
    paired_bootstrap_auc_delta,
    split_frame,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.policies import GateThresholds
from mlops_steps.training.gate import evaluate_gate, review_reasons

CHURN = load_contract("churn")


def test_split_is_deterministic_disjoint_and_complete() -> None:
    frame = generate_churn(10_000, 1)
    a = split_frame(frame, "customer_id")
    b = split_frame(frame.sample(frac=1.0, random_state=3), "customer_id")
    assert set(a.holdout.customer_id) == set(b.holdout.customer_id)
    parts = [set(a.train.customer_id), set(a.valid.customer_id), set(a.holdout.customer_id)]
    assert sum(map(len, parts)) == len(frame) == len(set().union(*parts))
    assert 0.12 < len(a.holdout) / len(frame) < 0.18


def test_weighted_auc_matches_sklearn_including_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3_000)
    scores = np.round(rng.random(3_000) + 0.3 * labels, 2)  # rounding creates ties
    ones = np.ones((1, len(labels)))
    assert _weighted_aucs(labels, scores, ones)[0] == pytest.approx(roc_auc_score(labels, scores))
    weights = rng.poisson(1.0, (1, len(labels)))
    expanded = np.repeat(np.arange(len(labels)), weights[0])
    assert _weighted_aucs(labels, scores, weights.astype(float))[0] == pytest.approx(
        roc_auc_score(labels[expanded], scores[expanded])
    )


def test_paired_bootstrap_interval() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 5_000)
    strong = labels + rng.normal(0, 0.8, 5_000)
    weak = labels + rng.normal(0, 1.6, 5_000)
    better = paired_bootstrap_auc_delta(labels, strong, weak, resamples=300)
    assert better["auc_delta_ci_low"] > 0
    point = roc_auc_score(labels, strong) - roc_auc_score(labels, weak)
    assert better["auc_delta_ci_low"] < point < better["auc_delta_ci_high"]
    same = paired_bootstrap_auc_delta(labels, strong, strong, resamples=100)
    assert same["auc_delta_ci_low"] == same["auc_delta_ci_high"] == 0
    again = paired_bootstrap_auc_delta(labels, strong, weak, resamples=300)
    assert again == better  # seeded: a retry computes the same interval


def test_classification_metrics_need_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        classification_metrics(np.zeros(10), np.linspace(0, 1, 10))


def _evaluation(auc: float, accuracy: float, latency: float, champion_auc: float | None) -> dict:
    evaluation: dict[str, Any] = {
        "challenger": {"auc": auc, "accuracy": accuracy, "latency_p95_ms": latency},
        "champion": None,
    }
    if champion_auc is not None:
        evaluation["champion"] = {"auc": champion_auc, "version": "3"}
    return evaluation


@pytest.mark.parametrize(
    ("evaluation", "failed"),
    [
        (_evaluation(0.86, 0.81, 5.0, None), set()),
        (_evaluation(0.86, 0.81, 5.0, 0.865), set()),  # within tolerance of the champion
        (_evaluation(0.74, 0.81, 5.0, None), {"min_auc"}),  # churn.yaml: auc >= 0.75
        (_evaluation(0.86, 0.65, 5.0, None), {"min_accuracy"}),
        (_evaluation(0.86, 0.81, 30.0, None), {"max_latency_ms"}),
        (_evaluation(0.86, 0.81, 5.0, 0.90), {"max_auc_drop_vs_champion"}),
        (_evaluation(0.5, 0.5, 99.0, 0.9), {"min_auc", "min_accuracy", "max_latency_ms",
                                           "max_auc_drop_vs_champion"}),
    ],
)  # fmt: skip
def test_gate_checks(evaluation: dict, failed: set[str]) -> None:
    checks = evaluate_gate(evaluation, GateThresholds(), CHURN)
    assert {c["check"] for c in checks if not c["passed"]} == failed
    assert len(checks) == (4 if evaluation["champion"] else 3)


def test_a_collapsed_champion_needs_review() -> None:
    """The flipped case: the champion scored 0.87 at training and 0.13 on the new hold-out."""
    evaluation = _evaluation(0.87, 0.81, 5.0, 0.13)
    evaluation["champion"]["training_auc"] = 0.87
    assert {
        c["check"] for c in evaluate_gate(evaluation, GateThresholds(), CHURN) if not c["passed"]
    } == (set())  # every check passes: "better than the champion" by 0.74 AUC
    (reason,) = review_reasons(evaluation, GateThresholds(), CHURN)
    assert reason.startswith("champion v3 collapsed on the new hold-out: AUC 0.87 at training")
    assert "-> 0.13 now (a drop of 0.74 > max_champion_collapse 0.20)" in reason
    assert review_reasons(evaluation, GateThresholds(max_champion_collapse=0.8), CHURN) == []


def test_champion_within_the_collapse_bound_or_absent_needs_no_review() -> None:
    evaluation = _evaluation(0.86, 0.81, 5.0, 0.80)
    evaluation["champion"]["training_auc"] = 0.87  # a drift-triggered run: 0.07 lost
    assert review_reasons(evaluation, GateThresholds(), CHURN) == []
    assert review_reasons(_evaluation(0.86, 0.81, 5.0, None), GateThresholds(), CHURN) == []


def test_a_champion_without_its_training_auc_needs_review() -> None:
    (reason,) = review_reasons(_evaluation(0.86, 0.81, 5.0, 0.85), GateThresholds(), CHURN)
    assert "has no training-time AUC (tag mlops.holdout_auc)" in reason
