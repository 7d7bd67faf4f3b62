"""gate: decide whether the challenger may be registered, from absolute and relative checks.

Three decisions: ``failed`` (nothing is registered), ``passed``, and ``needs_review``: the
challenger passed every check, but the champion collapsed on the new hold-out against its own
training-time AUC. Then the new labels disagree with the old ones (a label bug, or a new
distribution) and "better than the champion" means nothing; the version is registered so a person
can review it, and the deployment never approves it automatically.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from mlops_steps.common.storage import Partition, read_json, write_json
from mlops_steps.common.tracking import connect
from mlops_steps.core.errors import GateFailed
from mlops_steps.core.policies import GateThresholds
from mlops_steps.core.settings import Settings


def evaluate_gate(evaluation: dict[str, Any], thresholds: GateThresholds) -> list[dict[str, Any]]:
    """Every check with its value, threshold and outcome (pure: easy to test and to explain)."""
    challenger = evaluation["challenger"]
    checks = [
        {
            "check": "min_auc",
            "value": challenger["auc"],
            "threshold": thresholds.min_auc,
            "passed": challenger["auc"] >= thresholds.min_auc,
        },
        {
            "check": "min_accuracy",
            "value": challenger["accuracy"],
            "threshold": thresholds.min_accuracy,
            "passed": challenger["accuracy"] >= thresholds.min_accuracy,
        },
        {
            "check": "max_latency_ms",
            "value": challenger["latency_p95_ms"],
            "threshold": thresholds.max_latency_ms,
            "passed": challenger["latency_p95_ms"] <= thresholds.max_latency_ms,
        },
    ]
    champion = evaluation.get("champion")
    if champion is not None:
        floor = champion["auc"] - thresholds.max_auc_drop
        checks.append(
            {
                "check": "max_auc_drop_vs_champion",
                "value": challenger["auc"],
                "threshold": floor,
                "passed": challenger["auc"] >= floor,
                "champion_version": champion["version"],
                "champion_auc": champion["auc"],
            }
        )
    return checks


PASSED, FAILED, NEEDS_REVIEW = "passed", "failed", "needs_review"


def review_reasons(evaluation: dict[str, Any], thresholds: GateThresholds) -> list[str]:
    """Why a person must look at this challenger before it may be released (pure)."""
    champion = evaluation.get("champion")
    if champion is None:
        return []
    trained = champion.get("training_auc")
    if trained is None:
        return [
            f"champion v{champion['version']} has no training-time AUC (tag mlops.holdout_auc), "
            "so a collapse on the new hold-out cannot be ruled out"
        ]
    collapse = trained - champion["auc"]
    if collapse <= thresholds.max_champion_collapse:
        return []
    return [
        f"champion v{champion['version']} collapsed on the new hold-out: AUC {trained:.2f} at "
        f"training -> {champion['auc']:.2f} now (a drop of {collapse:.2f} > "
        f"max_champion_collapse {thresholds.max_champion_collapse:.2f}); the new labels disagree "
        "with the data it learnt (a label bug or a new distribution), so the challenger is not "
        "'better': review the data before releasing it"
    ]


def _describe(check: dict[str, Any]) -> str:
    relation = "<=" if check["check"].startswith("max_latency") else ">="
    return f"{check['check']}: {check['value']:.4f} (needs {relation} {check['threshold']:.4f})"


def run_gate(settings: Settings, partition_key: str, thresholds: GateThresholds) -> dict[str, Any]:
    partition = Partition.of(settings.dataset_root, partition_key)
    evaluation = read_json(partition.result("evaluate"), produced_by="evaluate")
    checks = evaluate_gate(evaluation, thresholds)
    failed = [c for c in checks if not c["passed"]]
    reviews = review_reasons(evaluation, thresholds)
    if failed:
        decision, reason = FAILED, "; ".join(_describe(c) for c in failed)
    elif reviews:
        decision, reason = NEEDS_REVIEW, "needs review: " + "; ".join(reviews)
    else:
        decision, reason = PASSED, "all checks passed"
    report = {
        "partition": partition.key,
        "run_id": evaluation["run_id"],
        "model_uri": evaluation["model_uri"],
        "data_sha256": evaluation["data_sha256"],
        "decision": decision,
        "reason": reason,
        "thresholds": asdict(thresholds),
        "checks": checks,
        "review": reviews,
        "champion_version": (evaluation.get("champion") or {}).get("version"),
    }
    write_json(partition.result("gate"), report)
    client = connect()
    for key, value in {
        "mlops.gate.decision": decision,
        "mlops.gate.reason": reason[:4000],
        "mlops.gate.thresholds": json.dumps(asdict(thresholds), sort_keys=True),
    }.items():
        client.set_tag(evaluation["run_id"], key, value)
    if failed:
        raise GateFailed(
            f"challenger rejected, nothing registered: {reason}",
            subject=f"run {evaluation['run_id']}",
            fix="inspect the evaluation in MLflow; retrain with more or better data",
        )
    return report
