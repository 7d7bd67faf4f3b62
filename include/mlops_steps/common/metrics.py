"""Deterministic splits and classification metrics, including a paired bootstrap of AUC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_steps.contract.schema import ID_COLUMN

# Shares of the hashed id space; the hold-out is the same rows for every model of a partition.
TRAIN_SHARE, VALID_SHARE = 70, 15
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame


def split_frame(frame: pd.DataFrame) -> Splits:
    """Split by a hash of the customer id: stable across runs, libraries and row order."""
    bucket = pd.util.hash_pandas_object(frame[ID_COLUMN], index=False).to_numpy() % 100
    return Splits(
        train=frame[bucket < TRAIN_SHARE],
        valid=frame[(bucket >= TRAIN_SHARE) & (bucket < TRAIN_SHARE + VALID_SHARE)],
        holdout=frame[bucket >= TRAIN_SHARE + VALID_SHARE],
    )


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
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
        "log_loss": float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


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
    """Confidence interval of AUC(challenger) - AUC(champion) on the same rows.

    Both models are scored on identical Poisson-bootstrap resamples, so the interval reflects the
    difference between the models, not the luck of the hold-out draw.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    deltas: list[np.ndarray] = []
    for start in range(0, resamples, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, resamples - start), len(labels)))
        weights = weights.astype(np.float32)
        deltas.append(
            _weighted_aucs(labels, challenger_scores, weights)
            - _weighted_aucs(labels, champion_scores, weights)
        )
    delta = np.concatenate(deltas)
    delta = delta[np.isfinite(delta)]
    alpha = (1.0 - confidence) / 2.0
    return {
        "auc_delta_mean": float(delta.mean()),
        "auc_delta_ci_low": float(np.quantile(delta, alpha)),
        "auc_delta_ci_high": float(np.quantile(delta, 1.0 - alpha)),
        "bootstrap_resamples": float(len(delta)),
        "confidence": confidence,
    }
