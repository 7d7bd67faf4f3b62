"""register: make the gated challenger a model version with the alias ``challenger``.

One version per training run: a retry looks the version up by run id before registering, and two
overlapping attempts that both registered keep the lower version (the other deletes its own). Only
a FINISHED training run is registered (a run a killed attempt left behind is not). The
``champion`` alias is never touched here; promotion belongs to the deployment pipeline.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlops_steps.common.storage import Partition, read_json, write_json
from mlops_steps.common.tracking import CHALLENGER, CHAMPION, connect, version_by_alias
from mlops_steps.contract.model import METRICS
from mlops_steps.core.errors import GateFailed, StepError
from mlops_steps.core.settings import Settings
from mlops_steps.training.gate import NEEDS_REVIEW, PASSED
from mlops_steps.training.shift import shift_tags

_READY_TIMEOUT_S = 300.0
ALL_METRICS = frozenset(m for metrics in METRICS.values() for m in metrics)


def _existing_version(client: Any, model_name: str, run_id: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _require_finished_run(client: Any, run_id: str) -> None:
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise StepError(
            f"training run {run_id} is {status}, not FINISHED; only a finished run is registered",
            subject="results/train.json",
            fix="re-run 'train' for this partition (it retires runs left by killed attempts)",
        )


def _one_version_per_run(client: Any, model_name: str, run_id: str, created: str) -> str:
    """After registering ``created``: an overlapping attempt may have registered the same run
    too. Every attempt keeps the lowest version and deletes the one it created if higher."""
    lowest = _existing_version(client, model_name, run_id)
    kept = str(lowest.version) if lowest is not None else created
    if kept != created:
        client.delete_model_version(model_name, created)
    return kept


def _wait_ready(client: Any, model_name: str, version: str) -> Any:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        current = client.get_model_version(model_name, version)
        if current.status == "READY":
            return current
        if current.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise StepError(
                f"model version did not become READY (status {current.status})",
                subject=f"{model_name} v{version}",
            )
        time.sleep(1.0)


def version_tags(
    gate: dict[str, Any], evaluation: dict[str, Any], validation: dict[str, Any]
) -> dict[str, str]:
    """Tags that let the deployment pipeline re-check the gate without reading local files:
    the task, its primary metric and every hold-out metric as ``mlops.holdout_<metric>``."""
    challenger = evaluation["challenger"]
    names = evaluation.get("metrics") or [m for m in challenger if m in ALL_METRICS]
    tags = {
        "mlops.gate.decision": gate["decision"],
        "mlops.gate.reason": gate["reason"][:4000],
        "mlops.gate.checks": json.dumps(gate["checks"], sort_keys=True)[:7000],
        "mlops.data_sha256": gate["data_sha256"],
        "mlops.partition": gate["partition"],
        **{f"mlops.holdout_{m}": f"{challenger[m]:.6f}" for m in names},
        "mlops.latency_p95_ms": f"{challenger['latency_p95_ms']:.4f}",
    }
    if evaluation.get("task"):
        tags["mlops.task"] = evaluation["task"]
    if evaluation.get("primary_metric"):
        tags["mlops.primary_metric"] = evaluation["primary_metric"]
    tags |= shift_tags(validation.get("shift"))
    if evaluation.get("champion"):
        comparison = evaluation["comparison"]
        metric = comparison.get("metric", "auc")
        tags["mlops.compared_to_champion"] = str(evaluation["champion"]["version"])
        # challenger - champion on the same hold-out (for a loss, negative is better)
        tags[f"mlops.{metric}_delta"] = f"{comparison[f'{metric}_delta']:.6f}"
    tags["mlops.training_data"] = evaluation.get("training_data", "source")
    if evaluation.get("holdouts"):
        tags |= served_tags(evaluation, names)
    return tags


def _hold_out_comparison(prefix: str, scored: dict[str, Any], metric: str) -> dict[str, str]:
    """The champion's primary metric on one hold-out, the delta and its bootstrap interval."""
    if scored.get("champion") is None:
        return {}
    comparison = scored["comparison"]
    return {
        f"mlops.{prefix}champion_{metric}": f"{scored['champion'][metric]:.6f}",
        **{
            f"mlops.{prefix}{metric}_delta{end}": f"{comparison[f'{metric}_delta{end}']:.6f}"
            for end in ("", "_ci_low", "_ci_high")
        },
    }


def served_tags(evaluation: dict[str, Any], names: list[str]) -> dict[str, str]:
    """A model trained on served traffic: its window, both hold-outs' sizes, its metrics on the
    reference hold-out and, on each hold-out, the champion's primary metric and the delta with
    its bootstrap interval (what the approval page shows)."""
    recent, reference = evaluation["holdouts"]["recent"], evaluation["holdouts"]["reference"]
    metric = evaluation["primary_metric"]
    window = evaluation.get("served_window") or {}
    tags = {
        "mlops.served_window": f"{window.get('start', '?')}/{window.get('end', '?')}",
        "mlops.recent_holdout_rows": str(recent["rows"]),
        "mlops.reference_holdout_rows": str(reference["rows"]),
        "mlops.reference_partition": str(reference.get("partition")),
        **{f"mlops.reference_holdout_{m}": f"{reference['challenger'][m]:.6f}" for m in names},
        **_hold_out_comparison("recent_", recent, metric),
        **_hold_out_comparison("reference_", reference, metric),
    }
    if reference.get("champion") is None:
        tags["mlops.reference_compared_to_champion"] = "none: no champion"
    return tags


def run_register(settings: Settings, partition_key: str) -> dict[str, Any]:
    import mlflow

    partition = Partition.of(settings.dataset_root, partition_key)
    trained = read_json(partition.result("train"), produced_by="train")
    evaluation = read_json(partition.result("evaluate"), produced_by="evaluate")
    gate = read_json(partition.result("gate"), produced_by="gate")
    validation = read_json(partition.result("validate"), produced_by="validate")
    # needs_review is registered (a person reviews it); the deployment never auto-approves it.
    if gate.get("decision") not in {PASSED, NEEDS_REVIEW}:
        raise GateFailed(
            f"gate decision is {gate.get('decision')!r}; nothing registered",
            subject=str(partition.result("gate")),
        )
    if not gate["run_id"] == evaluation["run_id"] == trained["run_id"]:
        raise StepError(
            f"results disagree: train {trained['run_id']}, evaluate {evaluation['run_id']}, "
            f"gate {gate['run_id']}",
            subject=str(partition.root),
            fix="re-run evaluate and gate for this partition",
        )

    client = connect()
    model_name, run_id = settings.model_name, trained["run_id"]
    _require_finished_run(client, run_id)
    existing = _existing_version(client, model_name, run_id)
    created = existing is None
    if existing is None:
        registered = mlflow.register_model(
            trained["model_uri"], model_name, await_registration_for=int(_READY_TIMEOUT_S)
        )
        version_number = _one_version_per_run(client, model_name, run_id, str(registered.version))
    else:
        version_number = str(existing.version)
    version = _wait_ready(client, model_name, version_number)
    for key, value in version_tags(gate, evaluation, validation).items():
        client.set_model_version_tag(model_name, version_number, key, value)

    champion = version_by_alias(client, model_name, CHAMPION)
    is_champion = champion is not None and str(champion.version) == version_number
    if not is_champion:
        # A version already serving as champion (a re-run after promotion) is not a challenger.
        client.set_registered_model_alias(model_name, CHALLENGER, version_number)
    result = {
        "model_name": model_name,
        "version": version_number,
        "alias": CHAMPION if is_champion else CHALLENGER,
        "run_id": run_id,
        "model_uri": f"models:/{model_name}/{version_number}",
        "status": version.status,
        "created": created,
        "champion_version": str(champion.version) if champion is not None else None,
    }
    write_json(partition.result("register"), result)
    return result
