"""The monitoring step's policies: which served window it judges, drift and performance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlops_steps.core.options import option

# Evidently 0.7 stattest names (tests/dags/test_monitoring_dag_shape.py checks them against its
# registry; listed literally so DAG parsing never imports Evidently). Leaving a method unset
# ("auto") lets Evidently choose per column: Wasserstein / Jensen-Shannon above 1,000 rows.
NUMERIC_METHODS = (
    "wasserstein",
    "ks",
    "psi",
    "jensenshannon",
    "kl_div",
    "hellinger",
    "ed",
    "cramer_von_mises",
    "anderson",
    "mannw",
)
CATEGORY_METHODS = ("jensenshannon", "psi", "kl_div", "hellinger", "chisquare", "TVD")
ANY_METHODS = tuple(dict.fromkeys(NUMERIC_METHODS + CATEGORY_METHODS))


@dataclass(frozen=True)
class ServedWindowPolicy:
    """Which served predictions ``monitor`` judges, and how many it needs to judge them."""

    window_hours: float = option(
        1,
        help="hours of predictions before --until (or now)",
        title="Window (hours)",
        description="Predictions served in this many hours before the run's logical date.",
        exclusive_minimum=0,
        maximum=168,
    )
    min_rows: int = option(
        200,
        help="fewer champion rows in the window fail the step",
        title="Minimum champion rows",
        description="Fewer fail the run: too little traffic is never reported as no drift.",
        minimum=1,
    )
    max_null_share: float = option(
        0.0, help="max share of nulls in a served feature", minimum=0, maximum=1
    )


@dataclass(frozen=True)
class DriftPolicy:
    """How drift is tested and when it counts (an unset method is Evidently's per-column choice:
    Wasserstein / Jensen-Shannon above 1,000 reference rows, K-S / chi-square below)."""

    stattest: str | None = option(None, help="drift test for all features", choices=ANY_METHODS)
    num_stattest: str | None = option(
        None,
        help="drift test for numeric features",
        title="Drift test for numeric features",
        choices=NUMERIC_METHODS,
    )
    cat_stattest: str | None = option(
        None,
        help="drift test for categorical features",
        title="Drift test for categorical features",
        choices=CATEGORY_METHODS,
    )
    threshold: float | None = option(
        None,
        help="drift test threshold for all features; auto: each method's own",
        title="Drift test threshold",
        description="Empty: the method's own (0.1 for distances, 0.05 for p-values).",
        exclusive_minimum=0,
        flag="--stattest-threshold",
        param="stattest_threshold",
    )
    per_column_stattest: Mapping[str, str] = field(default_factory=dict)
    per_column_threshold: Mapping[str, float] = field(default_factory=dict)
    # Dataset drift when at least this share of the features drifted. Evidently's default is
    # 0.5; a churn model is driven by a handful of features, so two of 16 moving matters (a
    # distance test at its default threshold almost never flags a column by chance).
    drift_share: float = option(
        0.1,
        help="dataset drift when this share of features drifted",
        title="Share of drifted features that is dataset drift",
        minimum=0,
        maximum=1,
    )
    prediction_stattest: str = option(
        "psi",
        help="drift test for the served scores",
        title="Drift test for the served scores",
        choices=NUMERIC_METHODS,
    )
    prediction_threshold: float | None = option(
        None,
        help="score drift threshold; auto: the method's own (psi: 0.1)",
        title="Score drift threshold",
        exclusive_minimum=0,
    )
    report_sample_rows: int = option(
        100_000, help="rows per side in the HTML report; the decision uses all", minimum=1
    )
    seed: int = 0


@dataclass(frozen=True)
class PerformancePolicy:
    """When the champion counts as degraded on labelled traffic."""

    # The task's primary metric (the contract's) against the champion's training-time
    # ``mlops.holdout_<metric>``, in the metric's better direction. Scores on a 0..1 scale (auc,
    # accuracy, f1, macro_f1, r2) are bounded by an absolute drop (churn: AUC may lose 0.05),
    # losses without a scale (log_loss, rmse, mae) by a share of the training-time value.
    max_primary_drop: float = option(
        0.05,
        help="max drop of the primary metric on labelled traffic, when it is a 0..1 score "
        "(auc, accuracy, f1, macro_f1, r2)",
        title="Max primary-metric drop on labelled traffic (0..1 scores)",
        minimum=0,
        maximum=1,
    )
    max_primary_relative_drop: float = option(
        0.1,
        help="max relative worsening of the primary metric on labelled traffic, when it is a "
        "loss (log_loss, rmse, mae)",
        title="Max relative primary-metric worsening (losses)",
        minimum=0,
        maximum=10,
    )
    max_accuracy_drop: float = option(
        0.05,
        help="max accuracy drop (classification)",
        title="Max accuracy drop",
        minimum=0,
        maximum=1,
    )
    min_labeled_rows: int = option(
        200, help="fewer labelled rows: performance is not judged", minimum=1
    )
