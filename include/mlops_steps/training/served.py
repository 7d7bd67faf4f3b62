"""The served-data training source: what the service answered in a window, joined with the labels
that arrived for it, mixed with a share of the champion's training rows.

A drift-triggered run learns the world the champion failed on; without the champion's own rows
it would forget the one it knew. So the partition holds:

* the window's logged predictions (the service's features, as it saw them), one row per id (the
  contract's id from ``entity_id``; without one, ``request_id:row``): the newest prediction per id
  wins, among those with a label when any has one; each row labelled by
  :func:`mlops_steps.common.labels.join_labels`, with labels read up to the run's ``as_of`` (a
  retry reads the same ones);
* ``reference_share`` of the partition drawn from the champion's training partition, only from
  its train and valid buckets (:func:`split_frame`), never its hold-out, chosen by a hash of the id
  (the same rows on every run), and never an id the served rows hold (the served row is newer).

Everything the partition was built from is recorded in ``manifest["served"]`` (windows, files and
their sha256, counts, join rate). Too few labelled rows: :class:`TooFewLabelledRows`, nothing
written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.labels import join_labels, read_labels
from mlops_steps.common.metrics import id_column_of, split_frame, with_row_ids
from mlops_steps.common.predictions import log_files, read_window
from mlops_steps.common.window import EmptyWindow, FeatureKind, Window, parse_time
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError
from mlops_steps.core.feedback import AUTO, SERVED, ServedDataRequest

#: Where a window came from: given to the run (``--served-window``: the drift event's, or the one a
#: person set in Param served_window), or the ``served_days`` before the run.
GIVEN, SERVED_DAYS = "served_window", "served_days"
# Orders the champion's rows for the reference draw: any fixed key works, a new one would draw
# other rows (hash_pandas_object wants exactly 16 characters).
_DRAW_KEY = "mlops-reference1"
_DTYPE_OF_KIND = {"integer": "int64", "float": "float64", "boolean": "bool", "category": "object"}


class ServedDataError(StepError):
    """The served traffic of the window cannot make a training partition."""


class TooFewLabelledRows(ServedDataError):
    """Fewer served rows have a label than the run needs (``min_labeled_rows``)."""


@dataclass(frozen=True)
class ServedPlan:
    """Which served traffic a run reads, and where that choice came from."""

    window: Window
    window_from: str  # GIVEN | SERVED_DAYS
    as_of: dt.datetime


@dataclass(frozen=True)
class Reference:
    """The champion's training partition, read and checked against its version's tags."""

    frame: pd.DataFrame
    model_version: str
    partition: str
    data_sha256: str


def parse_served_window(text: str) -> Window | None:
    """``START/END`` (ISO 8601) as a window; empty text: no window (the run was not woken by
    drift)."""
    text = (text or "").strip()
    if not text:
        return None
    start, sep, end = text.partition("/")
    if not sep:
        raise ServedDataError(
            f"{text!r} is not START/END",
            subject="--served-window",
            fix="give two ISO 8601 times joined by '/', e.g. "
            "2026-11-20T00:00:00+00:00/2026-11-21T00:00:00+00:00",
        )
    return Window(
        parse_time(start, "--served-window start"), parse_time(end, "--served-window end")
    )


def plan_served(
    request: ServedDataRequest, window: Window | None, as_of: dt.datetime
) -> ServedPlan | None:
    """The served traffic a run trains on, or None when it reads the source: ``auto`` trains on
    served traffic only when a window is given (a drift event's), ``served`` always (the given
    window, else the ``served_days`` before ``as_of``), ``source`` never."""
    if request.training_data == AUTO and window is not None:
        return ServedPlan(window, GIVEN, as_of)
    if request.training_data == SERVED:
        if window is not None:
            return ServedPlan(window, GIVEN, as_of)
        return ServedPlan(
            Window(as_of - dt.timedelta(days=request.served_days), as_of), SERVED_DAYS, as_of
        )
    return None


def feature_kinds(contract: ModelContract) -> dict[str, FeatureKind]:
    """The contract's features as the prediction-log reader checks them."""
    return {f.name: FeatureKind(f.name, f.kind, f.nullable) for f in contract.features}


def _log_provenance(location: str, window: Window) -> list[dict[str, Any]]:
    """Each log file the window reads, with the sha256 and line count of its complete lines
    (what the reader reads: a line still being written is not part of it)."""
    out = []
    for log_file in log_files(location, window):
        data = log_file.read()
        data = data[: data.rfind(b"\n") + 1]
        out.append(
            {
                "name": log_file.name,
                "sha256": hashlib.sha256(data).hexdigest(),
                "rows": data.count(b"\n"),
            }
        )
    return out


def _as_dtype(column: pd.Series, dtype: Any, name: str) -> pd.Series:
    """``column`` as ``dtype`` (the champion partition's, else the contract kind's), refusing a
    change of value (2.5 is not an integer); a column with missing values keeps them (validate
    judges whether the feature may be missing)."""
    target = np.dtype(dtype) if not isinstance(dtype, pd.api.extensions.ExtensionDtype) else dtype
    if column.dtype == target or column.isna().any():
        return column
    if pd.api.types.is_integer_dtype(target) or pd.api.types.is_bool_dtype(target):
        numbers = pd.to_numeric(column, errors="coerce")
        if numbers.isna().any() or not np.all(np.mod(numbers.to_numpy(dtype=float), 1) == 0):
            raise ServedDataError(
                f"served values of {name!r} are not {target} like the training data's "
                f"(first: {column[numbers.isna() | (numbers % 1 != 0)].iloc[0]!r})",
                subject=name,
                fix="the log must come from a service serving this model's contract",
            )
        return numbers.astype(target)
    try:
        return column.astype(target)
    except (TypeError, ValueError) as exc:
        raise ServedDataError(
            f"served values of {name!r} cannot be read as {target}: {exc}",
            subject=name,
            fix="the log must come from a service serving this model's contract",
        ) from None


def _training_labels(parsed: pd.Series, contract: ModelContract) -> pd.Series:
    """Parsed labels (binary 1.0/0.0, class name, number) as the training table spells them:
    the contract's class values."""
    if contract.task == "regression":
        return parsed.astype("float64")
    if contract.task == "binary":
        (negative,) = [c for c in contract.classes if str(c) != str(contract.positive_class)]
        (positive,) = [c for c in contract.classes if str(c) == str(contract.positive_class)]
        values = np.where(parsed.to_numpy(dtype=float) == 1.0, positive, negative)
    else:
        by_name = {str(c): c for c in contract.classes}
        values = parsed.map(by_name).to_numpy()
    is_int = all(isinstance(c, int) for c in contract.classes)
    return pd.Series(values, index=parsed.index, dtype="int64" if is_int else object)


def _served_ids(meta: pd.DataFrame, contract: ModelContract) -> pd.Series:
    """The id a served row has in the training table: the contract's (logged as ``entity_id``)
    or, without one, the request's ``request_id:row`` (missing when the request sent none)."""
    if contract.id_column:
        return meta["entity_id"].map(lambda v: None if v is None or pd.isna(v) else str(v))
    return meta["request_id"].astype(str) + ":" + meta["row"].astype(str)


def _one_row_per_id(
    meta: pd.DataFrame, features: pd.DataFrame, labels: pd.Series, ids: pd.Series
) -> pd.DataFrame:
    """Rows with an id, one per id: the newest labelled prediction, else the newest."""
    table = features.assign(_id=ids, _label=labels, _ts=meta["timestamp"])[ids.notna()]
    table = table.assign(_has=table["_label"].notna()).sort_values(
        ["_has", "_ts", "_id"], ascending=[False, False, True], kind="stable"
    )
    return table.drop_duplicates("_id", keep="first")


def _reference_rows(
    reference: Reference, contract: ModelContract, taken: set[str], wanted: int
) -> tuple[pd.DataFrame, int]:
    """Up to ``wanted`` of the champion's train/valid rows (never its hold-out, never an id
    ``taken`` by a served row), always the same ones; and how many ids the served rows took."""
    id_column = id_column_of(contract)
    splits = split_frame(reference.frame, id_column)
    pool = pd.concat([splits.train, splits.valid])
    superseded = pool[id_column].astype(str).isin(taken)
    pool = pool[~superseded]
    order = pd.util.hash_pandas_object(pool[id_column].astype(str), index=False, hash_key=_DRAW_KEY)
    drawn = pool.iloc[np.argsort(order.to_numpy(), kind="stable")[:wanted]]
    return drawn.sort_values(id_column, kind="stable"), int(superseded.sum())


def _target_dtypes(contract: ModelContract, reference: Reference | None) -> dict[str, Any]:
    if reference is not None:
        return dict(reference.frame.dtypes.items())
    dtypes: dict[str, Any] = {f.name: _DTYPE_OF_KIND[f.kind] for f in contract.features}
    if contract.id_column:
        dtypes[contract.id_column] = "object"
    return dtypes


def build_served_frame(
    contract: ModelContract,
    plan: ServedPlan,
    request: ServedDataRequest,
    *,
    prediction_log: str,
    labels_location: str,
    reference: Reference | None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The partition's rows and the provenance the manifest records under ``served``."""
    kinds = feature_kinds(contract)
    try:
        served = read_window(prediction_log, plan.window, kinds)
    except EmptyWindow as exc:
        raise TooFewLabelledRows(
            f"no served rows to learn from: {exc.message}",
            subject=exc.subject,
            fix="check MLOPS_PREDICTION_LOG, or widen the window (served_days); nothing was "
            "written",
        ) from None
    absent = [name for name in kinds if name not in served.seen_features]
    if absent:
        raise ServedDataError(
            f"features {absent} of model {contract.name}'s contract are never logged in the window",
            subject=f"{prediction_log} {plan.window.key}",
            fix="the log must come from a service serving this model's contract",
        )
    meta = served.meta
    labels = read_labels(labels_location, contract, cutoff=plan.as_of)
    join = join_labels(meta, labels, contract)
    ids = _served_ids(meta, contract)
    rows = _one_row_per_id(meta, served.features, join.labels, ids)
    with_id = int(ids.notna().sum())
    labelled = rows[rows["_label"].notna()].sort_values("_id", kind="stable")
    if len(labelled) < request.min_labeled_rows:
        raise TooFewLabelledRows(
            f"{len(labelled)} served rows with a label in window {plan.window.key} "
            f"(< min_labeled_rows {request.min_labeled_rows}): {len(meta)} served, "
            f"{join.matched} matched a label (join rate {join.join_rate:.1%}), "
            f"labels {labels.counts}",
            subject=f"model {contract.name}",
            fix="wait for labels to land in the labels location, widen the window "
            "(served_days), or lower --min-labeled-served-rows (Param min_labeled_served_rows); "
            "nothing was written or registered",
        )
    dtypes = _target_dtypes(contract, reference)
    columns: dict[str, pd.Series] = {}
    if contract.id_column:
        columns[contract.id_column] = labelled["_id"]
    for name in contract.feature_names:
        columns[name] = _as_dtype(labelled[name], dtypes.get(name, object), name)
    columns[contract.label] = _training_labels(labelled["_label"], contract)
    frame = pd.DataFrame(columns).reset_index(drop=True)
    frame = with_row_ids(frame, contract)
    id_column = id_column_of(contract)
    if id_column in dtypes:
        frame[id_column] = _as_dtype(frame[id_column], dtypes[id_column], id_column)
    if contract.label in dtypes:
        frame[contract.label] = _as_dtype(frame[contract.label], dtypes[contract.label], "label")

    share = request.reference_share
    reference_info: dict[str, Any] | None = None
    superseded = 0
    if reference is not None:
        wanted = round(len(frame) * share / (1.0 - share))
        taken = set(frame[id_column].astype(str))
        drawn, superseded = _reference_rows(reference, contract, taken, wanted)
        frame = pd.concat([frame, drawn.loc[:, list(frame.columns)]], ignore_index=True)
        reference_info = {
            "model_version": reference.model_version,
            "partition": reference.partition,
            "data_sha256": reference.data_sha256,
            "rows": len(drawn),
            "share": round(len(drawn) / len(frame), 6),
            "requested_share": share,
            "buckets": ["train", "valid"],
        }
    by_version = meta.groupby([meta["variant"].fillna("?"), meta["model_version"]]).size()
    provenance: dict[str, Any] = {
        "window": {"start": plan.window.start.isoformat(), "end": plan.window.end.isoformat()},
        "window_from": plan.window_from,
        "as_of": plan.as_of.isoformat(),
        "prediction_log": prediction_log,
        "log_files": _log_provenance(prediction_log, plan.window),
        "served_by": {
            f"{variant}/v{version}": int(n) for (variant, version), n in by_version.items()
        },
        "labels": {**labels.to_dict(), "location": labels_location},
        "join": join.to_dict(),
        "rows": {
            "served": len(meta),
            "without_id": len(meta) - with_id,
            "distinct": len(rows),
            "duplicates_dropped": with_id - len(rows),
            "labelled": len(labelled),
            "reference": len(frame) - len(labelled),
            "reference_ids_superseded": superseded,
            "total": len(frame),
        },
        "reference": reference_info,
    }
    return frame, provenance


def champion_reference(settings: Any) -> Reference | None:
    """The @champion version's training partition (checked against its tags); None without a
    champion (the partition is then served rows only, recorded as such)."""
    from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
    from mlops_steps.training.shift import _champion_frame

    champion = version_by_alias(connect(), settings.model_name, CHAMPION)
    if champion is None:
        return None
    frame, key = _champion_frame(settings, champion)
    return Reference(
        frame=frame,
        model_version=str(champion.version),
        partition=key,
        data_sha256=str((champion.tags or {})["mlops.data_sha256"]),
    )
