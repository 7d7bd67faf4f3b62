"""Deterministic row ids and splits, each task's metrics, and a paired bootstrap of a metric's
delta between two models scored on the same rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.contract.model import ModelContract

# Shares of the hashed id space; the hold-out is the same rows for every model of a partition.
TRAIN_SHARE, VALID_SHARE = 70, 15
DECISION_THRESHOLD = 0.5
#: The id derived from a row's content when the contract declares no id column.
ROW_ID_COLUMN = "_row_id"
_EPS = 1e-7


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame


# --- row ids and splits ----------------------------------------------------------------------


def id_column_of(contract: ModelContract) -> str:
    """The column that identifies a row: the contract's id, else the derived ``_row_id``."""
    return contract.id_column or ROW_ID_COLUMN


def _canonical(column: pd.Series) -> pd.Series:
    """One representation per value, whatever the file format made of it: numbers (and
    booleans) as float64, everything else as text; missing values all alike."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    return column.astype("string").fillna("\x00<missing>")


def hex_digits(hashes: np.ndarray) -> np.ndarray:
    """64-bit hashes as 16 lowercase hex digits (``f"{h:016x}"``) without a Python loop: a 10M-row
    table would spend seconds and ~700 MB of string objects on the loop."""
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    out = np.empty(len(hashes), dtype="S16")
    for start in range(0, len(hashes), 1 << 20):  # (rows x 16) nibbles, a million rows at a time
        block = hashes[start : start + (1 << 20)].astype(np.uint64)
        nibbles = (block[:, None] >> shifts) & np.uint64(15)
        out[start : start + len(block)] = alphabet[nibbles.astype(np.intp)].view("S16").ravel()
    return out


def occurrences(hashes: np.ndarray) -> np.ndarray:
    """Each row's count of earlier rows with the same hash (0 for a first occurrence)."""
    order = np.argsort(hashes, kind="stable")  # stable: equal hashes keep their row order
    ordered = hashes[order]
    positions = np.arange(len(hashes))
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    group_start = np.maximum.accumulate(np.where(first, positions, 0))
    out = np.empty(len(hashes), dtype=np.int64)
    out[order] = positions - group_start
    return out


def with_row_ids(frame: pd.DataFrame, contract: ModelContract) -> pd.DataFrame:
    """``frame`` with a ``_row_id`` derived from each row's feature and label values when the
    contract has no id column (else ``frame`` unchanged).

    The id is a hash of the values (independent of the row's position, the run and the file
    format); identical rows are told apart by their order of occurrence (``<hash>.1``, ...)."""
    import pyarrow as pa

    if contract.id_column:
        return frame
    columns = [c for c in (*contract.feature_names, contract.label) if c in frame]
    canonical = pd.DataFrame({c: _canonical(frame[c]) for c in columns})
    hashes = pd.util.hash_pandas_object(canonical, index=False).to_numpy()
    text = pa.array(hex_digits(hashes), type=pa.binary(16)).cast(pa.string())
    ids = pd.Series(pd.arrays.ArrowStringArray(text), index=frame.index)
    seen_before = occurrences(hashes)
    repeated = np.flatnonzero(seen_before)
    if len(repeated):  # duplicates are rare: spelled one by one
        ids.iloc[repeated] = [f"{ids.iloc[i]}.{seen_before[i]}" for i in repeated]
    out = frame.copy()
    out.insert(0, ROW_ID_COLUMN, ids)
    return out


def id_buckets(ids: pd.Series) -> np.ndarray:
    """Each id's bucket 0-99 (the split's unit): a hash of the value, whatever the dtype holding
    it (object, Arrow string or category hash alike)."""
    return (pd.util.hash_pandas_object(ids, index=False).to_numpy() % 100).astype(np.uint8)


def split_masks(buckets: np.ndarray) -> dict[str, np.ndarray]:
    """Which rows (by their id's bucket) are in the train, valid and hold-out splits."""
    return {
        "train": buckets < TRAIN_SHARE,
        "valid": (buckets >= TRAIN_SHARE) & (buckets < TRAIN_SHARE + VALID_SHARE),
        "holdout": buckets >= TRAIN_SHARE + VALID_SHARE,
    }


def split_frame(frame: pd.DataFrame, id_column: str) -> Splits:
    """Split by a hash of the row id: stable across runs, libraries and row order."""
    masks = split_masks(id_buckets(frame[id_column]))
    return Splits(**{name: frame[mask] for name, mask in masks.items()})


# --- labels and each task's metrics ----------------------------------------------------------


def label_key(value: Any) -> str:
    """A label value as the contract's class labels spell it (1.0 read from a CSV is "1")."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def encode_labels(values: Any, contract: ModelContract) -> np.ndarray:
    """Labels as the model learns them: binary 1 for the positive class, else 0; multiclass the
    index in ``contract.classes``; regression the value. An unknown class is a ValueError."""
    raw = pd.Series(values)
    if contract.task == "regression":
        return raw.astype("float64").to_numpy()
    # label_key per distinct value, not per row (a 10M-row column has a handful of values).
    keys = raw.map({value: label_key(value) for value in pd.unique(raw)})
    if contract.task == "binary":
        unknown = sorted(set(keys) - set(contract.class_labels))
        if unknown:
            raise ValueError(f"label values {unknown[:5]} are not in classes {contract.classes}")
        return (keys == label_key(contract.positive_class)).astype(np.int64).to_numpy()
    index = {label: i for i, label in enumerate(contract.class_labels)}
    unknown = sorted(set(keys) - set(index))
    if unknown:
        raise ValueError(f"label values {unknown[:5]} are not in classes {contract.classes}")
    return keys.map(index).astype(np.int64).to_numpy()


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Binary: ``scores`` are P(positive), ``labels`` 0/1."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    predicted = (scores >= DECISION_THRESHOLD).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("metrics need both classes in the labels")
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "log_loss": float(log_loss(labels, np.clip(scores, _EPS, 1 - _EPS), labels=[0, 1])),
    }


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """``probabilities``: rows x classes; ``labels``: class indices."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=float)
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(labels.tolist()) | set(predicted.tolist()))
    return {
        "log_loss": float(
            log_loss(labels, np.clip(probabilities, _EPS, 1.0),
                     labels=list(range(probabilities.shape[1])))
        ),
        "macro_f1": float(
            f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
        ),
        "accuracy": float(accuracy_score(labels, predicted)),
    }  # fmt: skip


def regression_metrics(labels: np.ndarray, values: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    labels, values = np.asarray(labels, dtype=float), np.asarray(values, dtype=float)
    return {
        "rmse": float(np.sqrt(mean_squared_error(labels, values))),
        "mae": float(mean_absolute_error(labels, values)),
        "r2": float(r2_score(labels, values)),
    }


def task_metrics(task: str, labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's registry metrics (``contract.metrics``) of a model's outputs (interface 2)."""
    if task == "binary":
        return classification_metrics(labels, outputs)
    if task == "multiclass":
        return multiclass_metrics(labels, outputs)
    return regression_metrics(labels, outputs)


def per_class_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_labels: Sequence[str]
) -> dict[str, float]:
    """Multiclass: precision, recall and F1 of each class, named ``<metric>__<class>``."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = np.asarray(probabilities).argmax(axis=1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=list(range(len(class_labels))), zero_division=0
    )
    out: dict[str, float] = {}
    for i, name in enumerate(class_labels):
        out |= {
            f"precision__{name}": float(precision[i]),
            f"recall__{name}": float(recall[i]),
            f"f1__{name}": float(f1[i]),
        }
    return out


# --- paired bootstrap of a metric's delta ----------------------------------------------------


def _weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` under each row of ``weights`` (shape: resamples x rows), ties counted
    half, in O(resamples x rows) by summing negative weight below each tied group of scores."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    is_pos = labels[order] == 1
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    pos = np.add.reduceat(np.where(is_pos, w, 0), starts, axis=1)
    neg = np.add.reduceat(np.where(is_pos, 0, w), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(numerator / denominator)


def _f1(weights: np.ndarray, predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    tp = weights @ (predicted & actual)
    wrong = weights @ (predicted & ~actual) + weights @ (~predicted & actual)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), 0.0)


def _weighted_regression(
    metric: str, labels: np.ndarray, values: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    error = values - labels
    if metric == "r2":

        def r2(w: np.ndarray) -> np.ndarray:
            total = w.sum(axis=1)
            mean = (w @ labels) / total
            sst = w @ labels**2 - total * mean**2
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.asarray(1.0 - (w @ error**2) / sst)

        return r2
    if metric == "rmse":
        return lambda w: np.sqrt((w @ error**2) / w.sum(axis=1))
    if metric == "mae":
        return lambda w: (w @ np.abs(error)) / w.sum(axis=1)
    raise ValueError(f"no bootstrap for regression metric {metric!r}")


def _weighted_classification(
    metric: str, task: str, labels: np.ndarray, outputs: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    if task == "binary":
        predicted = outputs >= DECISION_THRESHOLD
        actual = labels == 1
        p = np.clip(outputs, _EPS, 1 - _EPS)
        loss = -np.where(actual, np.log(p), np.log(1 - p))
        correct = predicted == actual
        f1 = lambda w: _f1(w, predicted, actual)  # noqa: E731
    else:
        predicted_class = outputs.argmax(axis=1)
        loss = -np.log(np.clip(outputs[np.arange(len(labels)), labels], _EPS, 1.0))
        correct = predicted_class == labels
        present = sorted(set(labels.tolist()) | set(predicted_class.tolist()))
        f1 = lambda w: np.mean(  # noqa: E731
            [_f1(w, predicted_class == k, labels == k) for k in present], axis=0
        )
    per_row = {"log_loss": loss, "accuracy": correct.astype(float)}
    if metric in per_row:
        term = per_row[metric]
        return lambda w: (w @ term) / w.sum(axis=1)
    if metric == ("f1" if task == "binary" else "macro_f1"):
        return f1
    raise ValueError(f"no bootstrap for {task} metric {metric!r}")


def _weighted_metric(
    metric: str, task: str, labels: np.ndarray, outputs: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """``weights (resamples x rows) -> metric per resample``; weighted means of per-row terms
    (and weighted confusion counts for F1), so one resample costs a matrix product; AUC by the
    exact weighted rank sum."""
    if metric == "auc":
        return lambda w: _weighted_aucs(labels, outputs, w)
    if task == "regression":
        return _weighted_regression(metric, labels.astype(float), outputs)
    return _weighted_classification(metric, task, labels, outputs)


def paired_bootstrap_delta(
    metric: str,
    task: str,
    labels: np.ndarray,
    challenger_outputs: np.ndarray,
    champion_outputs: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 50,
) -> dict[str, float]:
    """Confidence interval of metric(challenger) - metric(champion) on the same rows (raw
    difference: for a lower-is-better metric a negative delta is an improvement).

    Both models are scored on identical Poisson-bootstrap resamples, so the interval reflects the
    difference between the models, not the luck of the hold-out draw.
    """
    labels = np.asarray(labels)
    rows = len(labels)
    challenger = _weighted_metric(metric, task, labels, np.asarray(challenger_outputs, float))
    champion = _weighted_metric(metric, task, labels, np.asarray(champion_outputs, float))
    rng = np.random.default_rng(seed)
    deltas: list[np.ndarray] = []
    for start in range(0, resamples, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, resamples - start), rows))
        weights = weights.astype(np.float32 if metric == "auc" else np.float64)
        deltas.append(challenger(weights) - champion(weights))
    delta = np.concatenate(deltas)
    delta = delta[np.isfinite(delta)]
    alpha = (1.0 - confidence) / 2.0
    return {
        f"{metric}_delta_mean": float(delta.mean()),
        f"{metric}_delta_ci_low": float(np.quantile(delta, alpha)),
        f"{metric}_delta_ci_high": float(np.quantile(delta, 1.0 - alpha)),
        "bootstrap_resamples": float(len(delta)),
        "confidence": confidence,
    }


def paired_bootstrap_auc_delta(
    labels: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 50,
) -> dict[str, float]:
    """Binary AUC's paired bootstrap (the exact weighted AUC per resample)."""
    return paired_bootstrap_delta(
        "auc",
        "binary",
        labels,
        challenger_scores,
        champion_scores,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        chunk=chunk,
    )
