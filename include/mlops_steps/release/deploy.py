"""The release steps: resolve a candidate, start its canary, promote it, or roll it back.

The registry aliases are the source of truth: ``champion`` is what serves, ``previous_champion``
what served before it, ``challenger`` the newest gated candidate. A candidate's fate is written on
its model version (``mlops.deploy.*`` tags) and appended to the audit ledger (JSON lines), so a
re-run finds a decided candidate and does nothing twice.

Ordering keeps every failure safe: promotion moves the traffic first and the aliases last, after
re-reading ``champion``; a rollback retires the canary and puts the service back on whatever
``champion`` names, so a half-finished promotion can always be rolled back to a consistent state.
"""

from __future__ import annotations

import os
from typing import Any

from mlops_steps.common.storage import Partition
from mlops_steps.common.tracking import (
    CHALLENGER,
    CHAMPION,
    connect,
    tracking_uri,
    version_by_alias,
)
from mlops_steps.core.errors import NothingToDo, StepError
from mlops_steps.core.report_links import report_link
from mlops_steps.core.settings import Settings
from mlops_steps.release.ledger import (
    PREVIOUS_CHAMPION,
    PROMOTED,
    ROLLED_BACK,
    STATUS_TAG,
    analysis_result,
    read_ledger,
    record_decision,
)
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import Release


def _get_version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise StepError(
            f"model version does not exist ({exc.error_code})",
            subject=f"{name} v{version}",
            fix="pass an existing version (or leave it empty to deploy the challenger)",
        ) from None


def _links(settings: Settings, client: Any, version: Any) -> dict[str, str | None]:
    """What an approver opens: the MLflow run, and the partition's Data Docs, gate report and
    shift report as links to Airflow's reports route (path text saying why when they cannot be)."""
    tags = dict(version.tags or {})
    uri = tracking_uri().rstrip("/")
    run_link = None
    if version.run_id and uri.startswith("http"):
        experiment = client.get_run(version.run_id).info.experiment_id
        run_link = f"{uri}/#/experiments/{experiment}/runs/{version.run_id}"
    docs = gate = None
    if tags.get("mlops.partition"):
        partition = Partition.of(settings.dataset_root, tags["mlops.partition"])
        index = partition.data_docs_dir / "index.html"
        docs = (
            report_link(index, settings)
            if index.is_file()
            else f"{partition.data_docs_dir} (no Data Docs index written)"
        )
        gate = report_link(partition.result("gate"), settings)
    return {
        "mlflow_run": run_link,
        "data_docs": docs,
        "gate_report": gate,
        "shift_report": report_link(tags.get("mlops.shift.report"), settings),
    }


def run_resolve(settings: Settings, version: str | None) -> dict[str, Any]:
    """The candidate (``version``, else the challenger), gate re-checked, and what approvers
    see: its metrics, the champion it was compared with, links to its run and Data Docs."""
    client = connect()
    name = settings.model_name
    if version:
        candidate = _get_version(client, name, version)
    else:
        candidate = version_by_alias(client, name, CHALLENGER)
        if candidate is None:
            raise NothingToDo(f"no version has the alias {CHALLENGER!r}", subject=f"model {name}")
    number = str(candidate.version)
    tags = dict(candidate.tags or {})
    subject = f"{name} v{number}"
    if candidate.status != "READY":
        raise StepError(f"is {candidate.status}, not READY", subject=subject)
    champion = version_by_alias(client, name, CHAMPION)
    champion_version = str(champion.version) if champion is not None else None
    if champion_version == number:
        raise NothingToDo("is already the champion", subject=subject)
    if tags.get(STATUS_TAG):
        raise NothingToDo(
            f"was already decided ({STATUS_TAG}={tags[STATUS_TAG]}: "
            f"{tags.get('mlops.deploy.reason', '')})",
            subject=subject,
        )
    decision = tags.get("mlops.gate.decision")
    # needs_review may be released only by a person (the approval step never auto-approves it).
    if decision not in {"passed", "needs_review"}:
        raise StepError(
            f"has no passed quality gate (mlops.gate.decision={decision!r})",
            subject=subject,
            fix="only versions registered by the training pipeline's gate can be deployed",
        )
    evaluated_against = tags.get("mlops.compared_to_champion") or None
    if evaluated_against != champion_version:
        raise StepError(
            f"was evaluated against champion v{evaluated_against}, but the champion is now "
            f"v{champion_version}",
            subject=subject,
            fix="retrain or re-evaluate against the current champion",
        )
    return {
        "model_name": name,
        "version": number,
        "run_id": candidate.run_id,
        "champion_version": champion_version,
        "data_sha256": tags.get("mlops.data_sha256"),
        "partition": tags.get("mlops.partition"),
        "metrics": _candidate_metrics(tags),
        "training_data": tags.get("mlops.training_data") or "source",
        "holdouts": _holdouts(tags),
        "gate_decision": decision,
        "gate_reason": tags.get("mlops.gate.reason"),
        "review_reason": (
            (tags.get("mlops.gate.reason") or "the gate asked for a review").removeprefix(
                "needs review: "
            )
            if decision == "needs_review"
            else None
        ),
        "shift": {
            "summary": tags.get("mlops.shift.summary") or "not recorded on this version",
            "accepted": tags.get("mlops.shift.accepted") == "true",
            "report": tags.get("mlops.shift.report"),
        },
        "links": _links(settings, client, candidate),
    }


def _candidate_metrics(tags: dict[str, str]) -> dict[str, float | None]:
    """The version's hold-out metrics of its task (``mlops.holdout_<metric>``), its latency and
    its primary metric's change against the champion (``<primary>_delta_vs_champion``)."""
    metrics: dict[str, float | None] = {
        key.removeprefix("mlops."): _number(value)
        for key, value in tags.items()
        if key.startswith("mlops.holdout_")
    }
    metrics["latency_p95_ms"] = _number(tags.get("mlops.latency_p95_ms"))
    primary = tags.get("mlops.primary_metric", "auc")  # versions from before the contract files
    metrics[f"{primary}_delta_vs_champion"] = _number(tags.get(f"mlops.{primary}_delta"))
    # A model trained on served traffic: its metrics on the reference hold-out too.
    metrics |= {
        key.removeprefix("mlops."): _number(value)
        for key, value in tags.items()
        if key.startswith("mlops.reference_holdout_") and key != "mlops.reference_holdout_rows"
    }
    if tags.get(f"mlops.reference_{primary}_delta"):
        metrics[f"reference_{primary}_delta_vs_champion"] = _number(
            tags[f"mlops.reference_{primary}_delta"]
        )
    return metrics


def _holdouts(tags: dict[str, str]) -> dict[str, Any] | None:
    """A model trained on served traffic, on both of its hold-outs: rows, challenger and
    champion on the primary metric, the delta and its bootstrap interval (None otherwise)."""
    if tags.get("mlops.training_data") != "served":
        return None
    primary = tags.get("mlops.primary_metric", "auc")

    def one(prefix: str, challenger_tag: str) -> dict[str, Any]:
        rows = _number(tags.get(f"mlops.{prefix}holdout_rows"))
        return {
            "rows": int(rows) if rows is not None else None,
            "challenger": _number(tags.get(challenger_tag)),
            "champion": _number(tags.get(f"mlops.{prefix}champion_{primary}")),
            "delta": _number(tags.get(f"mlops.{prefix}{primary}_delta")),
            "ci_low": _number(tags.get(f"mlops.{prefix}{primary}_delta_ci_low")),
            "ci_high": _number(tags.get(f"mlops.{prefix}{primary}_delta_ci_high")),
        }

    return {
        "metric": primary,
        "served_window": tags.get("mlops.served_window"),
        "recent": one("recent_", f"mlops.holdout_{primary}"),
        "reference": {
            **one("reference_", f"mlops.reference_holdout_{primary}"),
            "partition": tags.get("mlops.reference_partition"),
        },
    }


def _number(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def run_promote(
    settings: Settings, release: Release, expected_champion: str | None, approved_by: str
) -> dict[str, Any]:
    """Canary → stable at 100 %, then ``previous_champion`` and ``champion`` move."""
    client = connect()
    name, version = settings.model_name, release.version
    champion = version_by_alias(client, name, CHAMPION)
    current = str(champion.version) if champion is not None else None
    if current == version:  # a retry after the aliases moved: finish the bookkeeping only
        previous = expected_champion
    elif current != (expected_champion or None):
        raise StepError(
            f"the champion moved to v{current} since the candidate was evaluated against "
            f"v{expected_champion}; nothing promoted",
            subject=f"{name}@{CHAMPION}",
            fix="let the rollback run, then retrain against the new champion",
        )
    else:
        previous = current
    state = open_target(settings).promote(release)
    if state.stable_version != version or state.canary_version is not None:
        raise StepError(
            f"after promotion the target serves stable v{state.stable_version}, "
            f"canary v{state.canary_version}",
            subject=f"{name} v{version}",
        )
    if previous is not None and current != version:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
    client.set_registered_model_alias(name, CHAMPION, version)
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    entry = record_decision(
        settings,
        client,
        version=version,
        status=PROMOTED,
        reason=f"canary analysis passed; v{version} replaces v{previous}",
        extra={
            "approved_by": approved_by,
            "previous_champion": previous,
            "traffic": state.as_dict(),
            "analysis": analysis_result(settings, version),
        },
    )
    return {"decision": PROMOTED, "version": version, "previous_champion": previous, **entry}


def run_rollback(
    settings: Settings, version: str, reason: str, approved_by: str, status: str
) -> dict[str, Any]:
    """Canary off, the service back on ``champion``, the candidate tagged with the reason.

    The aliases are not touched: whatever ``champion`` names is what serves afterwards.
    """
    client = connect()
    name = settings.model_name
    champion = version_by_alias(client, name, CHAMPION)
    if champion is not None and str(champion.version) == version:
        raise StepError(
            "is the champion; a promotion already completed, nothing to roll back",
            subject=f"{name} v{version}",
            fix=f"use the mlops_rollback__{name} DAG to restore the previous champion",
        )
    stable = (
        Release(name, str(champion.version), str(champion.tags.get("mlops.image.ref", "")))
        if champion is not None
        else None
    )
    state = open_target(settings).rollback(stable)
    if state.canary_version is not None or state.canary_weight:
        raise StepError(
            f"the canary still serves (v{state.canary_version} at {state.canary_weight})",
            subject=f"{name} v{version}",
        )
    analysis = analysis_result(settings, version)
    if analysis and not analysis.get("passed"):
        reason = f"{reason}: {', '.join(analysis.get('failed_checks') or ['analysis failed'])}"
    entry = record_decision(
        settings,
        client,
        version=version,
        status=status,
        reason=reason,
        extra={
            "approved_by": approved_by,
            "champion": stable.version if stable else None,
            "traffic": state.as_dict(),
            "analysis": analysis,
        },
    )
    return {"decision": status, "version": version, **entry}


def run_restore_previous(settings: Settings, requested_by: str, reason: str) -> dict[str, Any]:
    """The manual rollback: ``previous_champion`` becomes ``champion`` again and serves.

    The demoted version is tagged ``rolled_back``; ``previous_champion`` is cleared so a second
    rollback cannot bring the demoted version back. A retry of the same DAG run finds its own
    ledger line and only re-applies the traffic.
    """
    client = connect()
    name = settings.model_name
    run_id = os.environ.get("MLOPS_AIRFLOW_RUN_ID")
    done = [
        e
        for e in read_ledger(settings)
        if run_id and e.get("dag_run_id") == run_id and e.get("decision") == ROLLED_BACK
    ]
    champion = version_by_alias(client, name, CHAMPION)
    if done:
        restored, demoted = done[-1]["restored"], done[-1]["version"]
    else:
        previous = version_by_alias(client, name, PREVIOUS_CHAMPION)
        if previous is None:
            raise StepError(
                f"no version has the alias {PREVIOUS_CHAMPION!r}; nothing to restore",
                subject=f"model {name}",
                fix="a rollback needs an earlier promotion by the deployment DAG",
            )
        restored = str(previous.version)
        demoted = str(champion.version) if champion is not None else restored
        client.set_registered_model_alias(name, CHAMPION, restored)
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    stable = client.get_model_version(name, restored)
    release = Release(name, restored, str((stable.tags or {}).get("mlops.image.ref", "")))
    state = open_target(settings).rollback(release)
    if done:
        return {"decision": ROLLED_BACK, **done[-1], "traffic": state.as_dict()}
    entry = record_decision(
        settings,
        client,
        version=demoted,
        status=ROLLED_BACK,
        reason=reason or f"manual rollback to v{restored}",
        extra={"approved_by": requested_by, "restored": restored, "traffic": state.as_dict()},
    )
    return {"decision": ROLLED_BACK, **entry}
