"""The new partition against the current champion's training partition, before anything trains.

TFX's ExampleValidator compares spans the same way. Two things are compared, with the drift tests
monitoring uses (:mod:`mlops_steps.common.drift`):

* the label rate: beyond ``max_label_shift`` the run fails with :class:`LabelShiftRefused`, unless
  it says it means to learn a new distribution (``accept_shift``, recorded on the version). A
  flipped label column looks like an excellent model on its own hold-out; only this catches it;
* every feature's distribution: recorded, never fatal (retraining on drifted data is the point of
  a drift-triggered run).

No champion yet: nothing to compare, recorded as such. A champion whose training partition cannot
be read (or is not the data it was trained on) fails closed: the comparison cannot be made.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from typing import Any

import pandas as pd

from mlops_steps.common.drift import FeatureKind, column_drift, data_drift
from mlops_steps.common.storage import Partition, atomic_write_bytes, load_partition_frame
from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
from mlops_steps.contract.schema import FEATURES, LABEL_COLUMN
from mlops_steps.core.errors import StepError, ValidationFailed
from mlops_steps.core.policies import DriftPolicy, ValidationPolicy
from mlops_steps.core.settings import Settings

REPORT_JSON, REPORT_HTML = "shift.json", "shift.html"
NO_CHAMPION, COMPARED = "no_champion", "compared"


class ChampionDataUnreadable(StepError):
    """The champion's training partition cannot be read, so the shift cannot be judged."""


class LabelShiftRefused(ValidationFailed):
    """The label rate moved beyond the bound and the run did not say it means to learn it."""


def label_rate(frame: pd.DataFrame) -> float:
    return float(frame[LABEL_COLUMN].mean())


def compare_frames(
    reference: pd.DataFrame, current: pd.DataFrame, policy: ValidationPolicy
) -> dict[str, Any]:
    """Label rate and per-feature drift of ``current`` against ``reference`` (pure)."""
    kinds = {f.name: FeatureKind(f.name, f.kind) for f in FEATURES}
    drift_policy = DriftPolicy()  # monitoring's defaults: one meaning of "drifted"
    label_test = column_drift(
        LABEL_COLUMN,
        "cat",
        reference[LABEL_COLUMN],
        current[LABEL_COLUMN],
        method=None,
        threshold=None,
    )
    before, after = label_rate(reference), label_rate(current)
    shift = abs(after - before)
    exceeded = shift > policy.max_label_shift
    return {
        "label": {
            "column": LABEL_COLUMN,
            "champion_rate": before,
            "new_rate": after,
            "shift": shift,
            "max_shift": policy.max_label_shift,
            "exceeded": exceeded,
            "accepted": bool(exceeded and policy.accept_shift),
            "test": asdict(label_test),
        },
        "features": data_drift(reference, current, kinds, drift_policy),
    }


def _champion_frame(settings: Settings, version: Any) -> tuple[pd.DataFrame, str]:
    """The champion's training partition, checked against the data it was trained on."""
    subject = f"{settings.model_name} v{version.version} (@{CHAMPION})"
    tags = dict(version.tags or {})
    key, expected_sha = tags.get("mlops.partition"), tags.get("mlops.data_sha256")
    fix = (
        "restore the champion's partition under the dataset root (MLOPS_DATA_ROOT), or "
        "promote a version registered by the 'register' step"
    )
    if not key or not expected_sha:
        raise ChampionDataUnreadable(
            "lacks the mlops.partition / mlops.data_sha256 tags naming its training data, so the "
            "new partition cannot be compared with it",
            subject=subject,
            fix=fix,
        )
    partition = Partition.of(settings.dataset_root, key)
    if not partition.manifest.is_file():
        raise ChampionDataUnreadable(
            f"its training partition {key} is not at {partition.root}", subject=subject, fix=fix
        )
    try:
        frame, manifest = load_partition_frame(partition)
    except StepError as exc:
        raise ChampionDataUnreadable(
            f"its training partition {key} cannot be read ({exc})", subject=subject, fix=fix
        ) from None
    if manifest.get("data_sha256") != expected_sha:
        raise ChampionDataUnreadable(
            f"partition {key} holds data {manifest.get('data_sha256')}, but the champion was "
            f"trained on {expected_sha}",
            subject=subject,
            fix=fix,
        )
    return frame, key


def summarise(report: dict[str, Any]) -> str:
    """One line for the approval page and the version's tags."""
    if report["status"] == NO_CHAMPION:
        return "no champion yet: nothing to compare"
    label, features = report["label"], report["features"]
    verdict = "accepted by the run" if label["accepted"] else "over the bound"
    bound = f"{label['shift']:.2f} > {label['max_shift']:.2f}, {verdict}"
    within = f"{label['shift']:.2f} <= {label['max_shift']:.2f}"
    drifted = features["drifted_columns"]
    return (
        f"vs champion v{report['champion']['version']}: label rate "
        f"{label['champion_rate']:.2f} -> {label['new_rate']:.2f} "
        f"(shift {bound if label['exceeded'] else within}); "
        f"{len(drifted)}/{len(features['columns'])} features drifted"
        + (f": {', '.join(drifted)}" if drifted else "")
    )


def _html(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['column'])}</td><td>{html.escape(c['method_name'])}</td>"
        f"<td>{c['score']:.4f}</td><td>{c['threshold']:.4f}</td>"
        f"<td>{'<b>drifted</b>' if c['drifted'] else 'no'}</td></tr>"
        for c in (report.get("features") or {}).get("columns", [])
    )
    table = (
        "<table border=1 cellpadding=4><tr><th>feature</th><th>test</th><th>score</th>"
        f"<th>threshold</th><th>drift</th></tr>{rows}</table>"
        if rows
        else ""
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Shift vs the champion's data</title>"
        f"<h1>Partition {html.escape(report['partition'])} vs the champion's training data</h1>"
        f"<p>{html.escape(report['summary'])}</p>{table}"
    )


def compare_with_champion(
    settings: Settings, partition: Partition, frame: pd.DataFrame, policy: ValidationPolicy
) -> dict[str, Any]:
    """The comparison, written as JSON and HTML beside the partition's validation results."""
    champion = version_by_alias(connect(), settings.model_name, CHAMPION)
    report: dict[str, Any] = {
        "partition": partition.key,
        "status": NO_CHAMPION,
        "champion": None,
        "label": None,
        "features": None,
        "accept_shift": policy.accept_shift,
        "report_json": str(partition.validation_dir / REPORT_JSON),
        "report_html": str(partition.validation_dir / REPORT_HTML),
    }
    if champion is not None:
        reference, key = _champion_frame(settings, champion)
        report |= compare_frames(reference, frame, policy)
        report["status"] = COMPARED
        report["champion"] = {
            "version": str(champion.version),
            "partition": key,
            "data_sha256": (champion.tags or {}).get("mlops.data_sha256"),
        }
    report["summary"] = summarise(report)
    exceeded = bool(report["label"] and report["label"]["exceeded"])
    report["refused"] = exceeded and not policy.accept_shift
    partition.validation_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        partition.validation_dir / REPORT_JSON, json.dumps(report, indent=2).encode()
    )
    atomic_write_bytes(partition.validation_dir / REPORT_HTML, _html(report).encode())
    return report


def refuse_label_shift(report: dict[str, Any], partition: Partition) -> None:
    """LabelShiftRefused, naming both rates and the fix, when the report says so."""
    if not report["refused"]:
        return
    label, champion = report["label"], report["champion"]
    raise LabelShiftRefused(
        f"the label rate moved from {label['champion_rate']:.4f} (champion "
        f"v{champion['version']}, partition {champion['partition']}) to "
        f"{label['new_rate']:.4f}: a shift of {label['shift']:.4f} > max_label_shift "
        f"{label['max_shift']:.4f}",
        subject=str(partition.data),
        fix=(
            "check the labels (a flipped or mis-joined label column looks like this); if the "
            "new distribution is intended, re-run with accept_shift=true (--accept-shift true), "
            f"which is recorded on the version. Report: {report['report_html']}"
        ),
    )


def shift_tags(shift: dict[str, Any] | None) -> dict[str, str]:
    """What register records on the version (the deployment's approval page reads them)."""
    if not shift:
        return {"mlops.shift.status": "not_checked"}
    tags = {
        "mlops.shift.status": shift["status"],
        "mlops.shift.summary": shift["summary"][:4000],
        "mlops.shift.report": shift["report_html"],
    }
    if shift["status"] == COMPARED:
        label, features = shift["label"], shift["features"]
        tags |= {
            "mlops.shift.compared_to": shift["champion"]["version"],
            "mlops.shift.label_rate": f"{label['champion_rate']:.6f}->{label['new_rate']:.6f}",
            "mlops.shift.label_shift": f"{label['shift']:.6f}",
            "mlops.shift.accepted": str(label["accepted"]).lower(),
            "mlops.shift.drifted_features": ",".join(features["drifted_columns"]) or "none",
        }
    return tags
