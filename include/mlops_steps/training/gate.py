"""gate: decide whether the challenger may be registered, from absolute and relative checks.

The metric checks are the model contract's ``gate.checks`` (shaped like MLflow's
``MetricThreshold``), or the run's own (``--checks`` / Param ``gate_checks``, JSON); latency and
the champion-collapse bound are the model-independent :class:`GateThresholds`.

Three decisions: ``failed`` (nothing is registered), ``passed``, and ``needs_review``: the
challenger passed every check, but the champion collapsed on the new hold-out against its own
training-time value of the primary metric. Then the new labels disagree with the old ones (a
label bug, or a new distribution) and "better than the champion" means nothing; the version is
registered so a person can review it, and the deployment never approves it automatically.

A model trained on served traffic (the evaluation has ``holdouts``) is judged on two hold-outs:
the metric checks on the recent labelled traffic, and on the reference hold-out (the champion's
training data) its primary metric may be worse than the champion's by at most
``max_reference_relative_drop`` x |champion's value|. The collapse review is judged there too: on
recent traffic the champion's drop is the drift being answered, not a label bug. Without a
champion there is nothing to forget yet, so no reference check (the report says so).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from mlops_steps.common.storage import Partition, read_json, write_json
from mlops_steps.common.tracking import connect
from mlops_steps.contract.loader import _check, load_contract
from mlops_steps.contract.model import GateCheck, ModelContract
from mlops_steps.core.errors import GateFailed, StepError
from mlops_steps.core.policies import GateThresholds
from mlops_steps.core.settings import Settings

PASSED, FAILED, NEEDS_REVIEW = "passed", "failed", "needs_review"
#: How the messages name each metric.
DISPLAY = {
    "auc": "AUC",
    "log_loss": "log loss",
    "accuracy": "accuracy",
    "f1": "F1",
    "macro_f1": "macro F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R2",
}
_UNIT_SCALE = {"auc", "accuracy", "f1", "macro_f1", "r2"}  # shown with two decimals
_CHECK_KEYS = {
    "metric",
    "threshold",
    "min_absolute_change",
    "min_relative_change",
    "greater_is_better",
}
_CHECKS_OPTION = "--checks (Param gate_checks)"
NO_REFERENCE_CHECK = (
    "no champion: the reference hold-out was scored but not compared (nothing to forget yet)"
)


class GateChecksInvalid(StepError):
    """The run's gate checks (or the contract's lack of any) cannot be applied."""


def _fmt(metric: str, value: float) -> str:
    return f"{value:.2f}" if metric in _UNIT_SCALE else f"{value:.4g}"


def gate_checks(contract: ModelContract, thresholds: GateThresholds) -> tuple[GateCheck, ...]:
    """The run's checks (``thresholds.checks``, JSON) if given, else the contract's; refused
    (named) when malformed, naming a metric the task lacks, or when there are none at all."""
    text = thresholds.checks.strip()
    if not text:
        if not contract.gate:
            raise GateChecksInvalid(
                "the model's contract has no gate checks, so nothing would judge the challenger",
                subject=str(contract.path or contract.name),
                fix=f"add gate.checks to the contract, or give the run's checks with "
                f"{_CHECKS_OPTION}",
            )
        return contract.gate
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GateChecksInvalid(
            f"is not JSON: {exc}",
            subject=_CHECKS_OPTION,
            fix='e.g. [{"metric": "auc", "threshold": 0.8}], or empty for the contract\'s checks',
        ) from None
    if not isinstance(items, list) or not items:
        raise GateChecksInvalid(
            "must be a non-empty JSON list of checks",
            subject=_CHECKS_OPTION,
            fix="leave it empty for the contract's checks",
        )

    def fail(key: str, message: str, fix: str) -> GateChecksInvalid:
        return GateChecksInvalid(f"{key}: {message}", subject=_CHECKS_OPTION, fix=fix)

    checks = []
    for index, item in enumerate(items):
        key = f"checks[{index}]"
        if not isinstance(item, dict) or "metric" not in item:
            raise fail(key, "is not an object with a metric", 'e.g. {"metric": "auc", ...}')
        unknown = sorted(set(item) - _CHECK_KEYS)
        if unknown:
            raise fail(key, f"has unknown keys {unknown}", f"use {sorted(_CHECK_KEYS)}")
        for name in _CHECK_KEYS - {"metric", "greater_is_better"}:
            value = item.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise fail(f"{key}.{name}", f"{value!r} is not a number", "give a number")
        # The contract loader's own rules (a metric of the task, its direction, something
        # checked), reported through ``fail`` as this option's error.
        checks.append(_check(item, index, contract.task, fail))
    return tuple(checks)


def _threshold_check(check: GateCheck, value: float) -> dict[str, Any]:
    assert check.threshold is not None
    better = check.greater_is_better
    return {
        "check": f"{'min' if better else 'max'}_{check.metric}",
        "metric": check.metric,
        "value": value,
        "threshold": check.threshold,
        "relation": ">=" if better else "<=",
        "passed": value >= check.threshold if better else value <= check.threshold,
    }


def _change_checks(check: GateCheck, value: float, champion: dict[str, Any]) -> list[dict]:
    """min_absolute_change / min_relative_change against the champion on the same hold-out,
    each measured in the metric's better direction (negative: the loss tolerated)."""
    metric, better = check.metric, check.greater_is_better
    if check.min_absolute_change is None and check.min_relative_change is None:
        return []
    base = float(champion[metric])
    worse, gain = ("drop", "gain") if better else ("rise", "reduction")
    out = []
    for kind, change in (
        ("", check.min_absolute_change),
        ("relative_", check.min_relative_change),
    ):
        if change is None:
            continue
        amount = change if not kind else abs(base) * change
        bound = base + amount if better else base - amount
        name = f"max_{metric}_{kind}{worse}" if change <= 0 else f"min_{metric}_{kind}{gain}"
        out.append(
            {
                "check": f"{name}_vs_champion",
                "metric": metric,
                "value": value,
                "threshold": bound,
                "relation": ">=" if better else "<=",
                "passed": value >= bound if better else value <= bound,
                "champion_version": champion["version"],
                f"champion_{metric}": base,
            }
        )
    return out


def _reference(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The reference hold-out's scores of a served partition's evaluation (else None)."""
    holdouts = evaluation.get("holdouts")
    return holdouts.get("reference") if isinstance(holdouts, dict) else None


def reference_check(
    evaluation: dict[str, Any], thresholds: GateThresholds, contract: ModelContract
) -> dict[str, Any] | None:
    """On the reference hold-out the challenger's primary metric may be worse than the
    champion's by ``max_reference_relative_drop`` x |champion's value| (direction-aware);
    None when there is no reference hold-out or no champion to compare with."""
    reference = _reference(evaluation)
    if reference is None or reference.get("champion") is None:
        return None
    metric, better = contract.primary_metric, contract.greater_is_better
    base = float(reference["champion"][metric])
    value = float(reference["challenger"][metric])
    allowed = thresholds.max_reference_relative_drop * abs(base)
    bound = base - allowed if better else base + allowed
    comparison = reference.get("comparison") or {}
    return {
        "check": f"max_{metric}_relative_loss_on_reference",
        "metric": metric,
        "holdout": "reference",
        "value": value,
        "threshold": bound,
        "relation": ">=" if better else "<=",
        "passed": value >= bound if better else value <= bound,
        "max_relative_drop": thresholds.max_reference_relative_drop,
        "champion_version": reference["champion"]["version"],
        f"champion_{metric}": base,
        "partition": reference.get("partition"),
        "rows": reference.get("rows"),
        **{k: v for k, v in comparison.items() if k.startswith(f"{metric}_delta")},
    }


def evaluate_gate(
    evaluation: dict[str, Any], thresholds: GateThresholds, contract: ModelContract
) -> list[dict[str, Any]]:
    """Every check with its value, threshold and outcome (pure: easy to test and to explain)."""
    challenger = evaluation["challenger"]
    checks = gate_checks(contract, thresholds)
    out = [_threshold_check(c, challenger[c.metric]) for c in checks if c.threshold is not None]
    out.append(
        {
            "check": "max_latency_ms",
            "value": challenger["latency_p95_ms"],
            "threshold": thresholds.max_latency_ms,
            "relation": "<=",
            "passed": challenger["latency_p95_ms"] <= thresholds.max_latency_ms,
        }
    )
    champion = evaluation.get("champion")
    if champion is not None:
        for check in checks:
            out += _change_checks(check, challenger[check.metric], champion)
    on_reference = reference_check(evaluation, thresholds, contract)
    if on_reference is not None:
        out.append(on_reference)
    return out


def review_reasons(
    evaluation: dict[str, Any], thresholds: GateThresholds, contract: ModelContract
) -> list[str]:
    """Why a person must look at this challenger before it may be released (pure): the champion
    lost more than ``max_champion_collapse`` of its primary metric (in the metric's units) on
    the hold-out it is judged on (a served partition's reference hold-out, else the new one)."""
    reference = _reference(evaluation)
    champion = evaluation.get("champion") if reference is None else reference.get("champion")
    where = "the new hold-out" if reference is None else "the reference hold-out"
    if champion is None:
        return []
    metric, better = contract.primary_metric, contract.greater_is_better
    shown = DISPLAY.get(metric, metric)
    trained = champion.get(f"training_{metric}")
    if trained is None:
        return [
            f"champion v{champion['version']} has no training-time {shown} (tag "
            f"mlops.holdout_{metric}), so a collapse on {where} cannot be ruled out"
        ]
    now = champion[metric]
    collapse = trained - now if better else now - trained
    if collapse <= thresholds.max_champion_collapse:
        return []
    return [
        f"champion v{champion['version']} collapsed on {where}: {shown} "
        f"{_fmt(metric, trained)} at training -> {_fmt(metric, now)} now (a "
        f"{'drop' if better else 'rise'} of {_fmt(metric, collapse)} > max_champion_collapse "
        f"{_fmt(metric, thresholds.max_champion_collapse)}); the new labels disagree with the "
        "data it learnt (a label bug or a new distribution), so the challenger is not "
        "'better': review the data before releasing it"
    ]


def _holdouts_report(
    evaluation: dict[str, Any], reference: dict[str, Any], checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """Which hold-out judged what: the recent one the metric checks, the reference one the
    no-forgetting check and the collapse review (or why it was not checked)."""
    recent = evaluation["holdouts"]["recent"]
    checked = [c["check"] for c in checks if c.get("holdout") == "reference"]
    return {
        "recent": {
            "rows": recent["rows"],
            "checks": [c["check"] for c in checks if c.get("holdout") != "reference"],
        },
        "reference": {
            "rows": reference["rows"],
            "partition": reference.get("partition"),
            "checks": checked,
            "collapse_review": reference.get("champion") is not None,
            "not_checked": None if checked else NO_REFERENCE_CHECK,
        },
    }


def _describe(check: dict[str, Any]) -> str:
    relation = check.get("relation", ">=")
    return f"{check['check']}: {check['value']:.4f} (needs {relation} {check['threshold']:.4f})"


def run_gate(settings: Settings, partition_key: str, thresholds: GateThresholds) -> dict[str, Any]:
    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    evaluation = read_json(partition.result("evaluate"), produced_by="evaluate")
    checks = evaluate_gate(evaluation, thresholds, contract)
    failed = [c for c in checks if not c["passed"]]
    reviews = review_reasons(evaluation, thresholds, contract)
    if failed:
        decision, reason = FAILED, "; ".join(_describe(c) for c in failed)
    elif reviews:
        decision, reason = NEEDS_REVIEW, "needs review: " + "; ".join(reviews)
    else:
        decision, reason = PASSED, "all checks passed"
    reference = _reference(evaluation)
    if reference is not None and reference.get("champion") is None and not failed:
        reason += f"; {NO_REFERENCE_CHECK}"
    applied = {
        **asdict(thresholds),
        "checks": [c.to_dict() for c in gate_checks(contract, thresholds)],
        "checks_from": "run" if thresholds.checks.strip() else "contract",
    }
    report = {
        "partition": partition.key,
        "run_id": evaluation["run_id"],
        "model_uri": evaluation["model_uri"],
        "data_sha256": evaluation["data_sha256"],
        "task": contract.task,
        "primary_metric": contract.primary_metric,
        "decision": decision,
        "reason": reason,
        "thresholds": applied,
        "checks": checks,
        "review": reviews,
        "champion_version": (evaluation.get("champion") or {}).get("version"),
    }
    if reference is not None:
        report["training_data"] = "served"
        report["holdouts"] = _holdouts_report(evaluation, reference, checks)
    write_json(partition.result("gate"), report)
    client = connect()
    for key, value in {
        "mlops.gate.decision": decision,
        "mlops.gate.reason": reason[:4000],
        "mlops.gate.thresholds": json.dumps(applied, sort_keys=True)[:7000],
    }.items():
        client.set_tag(evaluation["run_id"], key, value)
    if failed:
        raise GateFailed(
            f"challenger rejected, nothing registered: {reason}",
            subject=f"run {evaluation['run_id']}",
            fix="inspect the evaluation in MLflow; retrain with more or better data",
        )
    return report
