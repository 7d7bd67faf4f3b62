"""The new partition against the current champion's training partition, before anything trains.

TFX's ExampleValidator compares spans the same way. Two things are compared, with the drift tests
monitoring uses (:mod:`mlops_steps.common.drift`):

* the label, by task: binary, the positive-class rate; multiclass, the largest change of one
  class's share; regression, the change of the label mean in units of the champion data's label
  standard deviation. Beyond ``max_label_shift`` the run fails with :class:`LabelShiftRefused`,
  unless it says it means to learn a new distribution (``accept_shift``, recorded on the
  version). A flipped label column looks like an excellent model on its own hold-out; only this
  catches it;
* every feature's distribution: recorded, never fatal (retraining on drifted data is the point of
  a drift-triggered run).

No champion yet: nothing to compare, recorded as such. A champion whose training partition cannot
be read (or is not the data it was trained on) fails closed: the comparison cannot be made.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.columnar import PartitionFile
from mlops_steps.common.drift import FeatureKind, column_drift, data_drift
from mlops_steps.common.metrics import encode_labels
from mlops_steps.common.storage import Partition, atomic_write_bytes
from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError, ValidationFailed
from mlops_steps.core.policies import DriftPolicy, ValidationPolicy
from mlops_steps.core.settings import Settings

REPORT_JSON, REPORT_HTML = "shift.json", "shift.html"
# The version tag holding the label statistic on both sides, by what the task compares.
_TAG_BY_WHAT = {
    "label rate": "label_rate",
    "class shares": "label_shares",
    "label mean": "label_mean",
}
NO_CHAMPION, COMPARED = "no_champion", "compared"


class ChampionDataUnreadable(StepError):
    """The champion's training partition cannot be read, so the shift cannot be judged."""


class LabelShiftRefused(ValidationFailed):
    """The label moved beyond the bound and the run did not say it means to learn it."""


def label_rate(frame: pd.DataFrame, contract: ModelContract) -> float:
    """Binary: the share of the positive class."""
    return float(encode_labels(frame[contract.label], contract).mean())


def _label_change(
    reference: pd.Series, current: pd.Series, contract: ModelContract
) -> dict[str, Any]:
    """The task's label statistics on both sides and the shift between them."""
    if contract.task == "binary":
        before = float(encode_labels(reference, contract).mean())
        after = float(encode_labels(current, contract).mean())
        return {"champion_rate": before, "new_rate": after, "shift": abs(after - before)}
    if contract.task == "multiclass":
        classes = len(contract.classes)
        old = np.bincount(encode_labels(reference, contract), minlength=classes) / len(reference)
        new = np.bincount(encode_labels(current, contract), minlength=classes) / len(current)
        return {
            "champion_shares": dict(zip(contract.class_labels, old.tolist(), strict=True)),
            "new_shares": dict(zip(contract.class_labels, new.tolist(), strict=True)),
            "shift": float(np.abs(new - old).max()),
        }
    before, after = float(reference.mean()), float(current.mean())
    spread = float(reference.std(ddof=0))
    # A constant champion label: any change of the mean is measured in its own units.
    shift = abs(after - before) / spread if spread > 0 else abs(after - before)
    return {"champion_mean": before, "champion_std": spread, "new_mean": after, "shift": shift}


def describe_label(label: dict[str, Any], digits: int) -> tuple[str, str, str]:
    """(what moved, before, after) as the messages write them."""
    if "champion_rate" in label:
        return (
            "label rate",
            f"{label['champion_rate']:.{digits}f}",
            f"{label['new_rate']:.{digits}f}",
        )
    if "champion_shares" in label:

        def shares(values: dict[str, float]) -> str:
            return "{" + ", ".join(f"{k}: {v:.{digits}f}" for k, v in values.items()) + "}"

        return "class shares", shares(label["champion_shares"]), shares(label["new_shares"])
    return "label mean", f"{label['champion_mean']:.{digits}g}", f"{label['new_mean']:.{digits}g}"


def _drift_frames(
    reference: pd.DataFrame, current: pd.DataFrame, contract: ModelContract
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, FeatureKind]]:
    """Booleans are compared as categories (their values as text)."""
    booleans = [f.name for f in contract.features if f.kind == "boolean"]
    kinds = {
        f.name: FeatureKind(f.name, "category" if f.kind == "boolean" else f.kind)
        for f in contract.features
    }
    if not booleans:
        return reference, current, kinds

    def as_text(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy(deep=False)  # shares every column but the booleans it replaces
        for name in booleans:
            out[name] = out[name].astype(str).where(out[name].notna())
        return out

    return as_text(reference), as_text(current), kinds


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    policy: ValidationPolicy,
    contract: ModelContract,
) -> dict[str, Any]:
    """Label shift and per-feature drift of ``current`` against ``reference`` (pure)."""
    drift_policy = DriftPolicy()  # monitoring's defaults: one meaning of "drifted"
    label_column = contract.label
    label_test = column_drift(
        label_column,
        "num" if contract.task == "regression" else "cat",
        reference[label_column],
        current[label_column],
        method=None,
        threshold=None,
    )
    change = _label_change(reference[label_column], current[label_column], contract)
    exceeded = change["shift"] > policy.max_label_shift
    ref, cur, kinds = _drift_frames(reference, current, contract)
    return {
        "label": {
            "column": label_column,
            "task": contract.task,
            **change,
            "max_shift": policy.max_label_shift,
            "exceeded": exceeded,
            "accepted": bool(exceeded and policy.accept_shift),
            "test": asdict(label_test),
        },
        "features": data_drift(ref, cur, kinds, drift_policy),
    }


def _champion_frame(
    settings: Settings, version: Any, columns: Sequence[str] | None = None
) -> tuple[pd.DataFrame, str]:
    """The champion's training partition (only ``columns``, all without), checked against the
    data it was trained on."""
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
        data = PartitionFile.open(partition)
        manifest = data.manifest
        frame = data.read(data.columns if columns is None else columns)
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
    what, before, after = describe_label(label, 2)
    unit = " std" if label.get("task") == "regression" else ""
    drifted = features["drifted_columns"]
    return (
        f"vs champion v{report['champion']['version']}: {what} {before} -> {after} "
        f"(shift{unit} {bound if label['exceeded'] else within}); "
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
    contract = load_contract(settings.model_name)
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
        # Features and label only: the rest is not compared, so not read.
        columns = [*contract.feature_names, contract.label]
        reference, key = _champion_frame(settings, champion, columns)
        report |= compare_frames(reference, frame, policy, contract)
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
    what, before, after = describe_label(label, 4)
    unit = {
        "multiclass": " (largest change of one class's share)",
        "regression": " (in standard deviations of the champion data's label)",
    }.get(label.get("task", "binary"), "")
    raise LabelShiftRefused(
        f"the {what} moved from {before} (champion v{champion['version']}, partition "
        f"{champion['partition']}) to {after}: a shift of {label['shift']:.4f}{unit} > "
        f"max_label_shift {label['max_shift']:.4f}",
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
        what, before, after = describe_label(label, 6)
        tags |= {
            "mlops.shift.compared_to": shift["champion"]["version"],
            f"mlops.shift.{_TAG_BY_WHAT[what]}": f"{before}->{after}",
            "mlops.shift.label_shift": f"{label['shift']:.6f}",
            "mlops.shift.accepted": str(label["accepted"]).lower(),
            "mlops.shift.drifted_features": ",".join(features["drifted_columns"]) or "none",
        }
    return tags
