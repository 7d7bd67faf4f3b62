"""The figures logged with each training run, by task (on the validation split).

binary: ROC, precision-recall and calibration; multiclass: the confusion matrix; regression:
residuals against the predicted value. Every task: the booster's feature importance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(figure: Any) -> None:
    _pyplot().close(figure)


def _binary(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _pyplot()
    figures: dict[str, Any] = {}
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    ax.legend()
    figures["plots/roc_curve.png"] = fig

    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    ax.axhline(labels.mean(), linestyle="--", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (validation)")
    ax.legend()
    figures["plots/pr_curve.png"] = fig

    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration (validation)")
    ax.legend()
    figures["plots/calibration.png"] = fig
    return figures


def _confusion(
    labels: np.ndarray, probabilities: np.ndarray, class_labels: Sequence[str]
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    matrix = confusion_matrix(
        labels, probabilities.argmax(axis=1), labels=list(range(len(class_labels)))
    )
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_labels))
    ax.set_xticks(ticks, labels=list(class_labels), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(class_labels))
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (validation)")
    fig.tight_layout()
    return {"plots/confusion_matrix.png": fig}


def _residuals(labels: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(values, labels - values, s=8, alpha=0.6)
    ax.axhline(0.0, linestyle="--", color="grey")
    ax.set(xlabel="predicted", ylabel="actual - predicted", title="Residuals (validation)")
    return {"plots/residuals.png": fig}


def _importance(booster: Any) -> dict[str, Any]:
    plt = _pyplot()
    gains = booster.feature_importance(importance_type="gain")
    order = np.argsort(gains)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh(np.array(booster.feature_name())[order], gains[order])
    ax.set(xlabel="total gain", title="Feature importance")
    fig.tight_layout()
    return {"plots/feature_importance.png": fig}


def task_plots(
    task: str,
    labels: np.ndarray,
    outputs: np.ndarray,
    booster: Any,
    class_labels: Sequence[str] = (),
) -> dict[str, Any]:
    """Artifact path -> matplotlib figure."""
    if task == "binary":
        figures = _binary(labels, outputs)
    elif task == "multiclass":
        figures = _confusion(labels, outputs, class_labels)
    else:
        figures = _residuals(labels, outputs)
    return figures | _importance(booster)
