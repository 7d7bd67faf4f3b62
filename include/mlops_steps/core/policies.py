"""Every step's tunable defaults, each declared once with its bounds and help.

The step verbs derive their flags from these classes and the DAGs their Params
(:mod:`mlops_steps.core.options`), so a default cannot disagree between the policy, the command
line and the trigger form. A field that names ``env`` can be changed per deployment through that
variable (``MLOPS_X`` or the Airflow Variable ``AIRFLOW_VAR_MLOPS_X``); the settings read them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from mlops_steps.core.options import AtMost, check_cross_fields, option

SYNTHETIC_SOURCE = "synthetic://churn"
DEFAULT_SEED = 42
_SEED_ENV = "MLOPS_DEFAULT_SEED"

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
class SourceRequest:
    """What ``ingest`` reads: a URI, and for the synthetic source its size, seed and drift.

    The default (synthetic://churn) only fits the churn model: for another model it stands for
    the ``source`` of the model's contract."""

    uri: str = option(
        SYNTHETIC_SOURCE,
        help="synthetic://churn, a path, file://, s3:// or https:// URI of a .csv, .csv.gz or "
        ".parquet file (default for a model other than churn: its contract's source)",
        title="Data source",
        description="synthetic://churn, a path, s3:// or https:// URI of a CSV/Parquet file.",
        flag="--source",
        param="source_uri",
    )
    rows: int = option(
        50_000,
        help="rows to generate (synthetic source)",
        title="Rows (synthetic source)",
        minimum=1_000,
        maximum=20_000_000,
        env="MLOPS_DEFAULT_ROWS",
    )
    seed: int = option(DEFAULT_SEED, help="random seed", title="Random seed", env=_SEED_ENV)
    drift: float = option(
        0.0,
        help="synthetic drift, 0..1",
        title="Injected drift (synthetic source)",
        description="0 = the reference distribution; 1 = strongly shifted and noisier labels.",
        minimum=0,
        maximum=1,
    )

    @property
    def is_synthetic(self) -> bool:
        return self.uri in {"synthetic", SYNTHETIC_SOURCE}


@dataclass(frozen=True)
class ValidationPolicy:
    """What ``validate`` requires beyond the data contract."""

    min_rows: int = option(
        1_000,
        help="fewer rows fail validation",
        title="Minimum rows",
        minimum=1,
        env="MLOPS_MIN_ROWS",
    )
    # Against the champion's training partition (training/shift.py). A flipped label column
    # moved the churn rate 0.31 -> 0.69; the synthetic source's drift=1 moves it 0.30 -> 0.58.
    max_label_shift: float = option(
        0.15,
        help="max label shift vs the champion's training data: binary, the change of the "
        "positive-class rate; multiclass, the largest change of one class's share; regression, "
        "the change of the label mean in units of the champion data's label standard deviation",
        title="Max label shift vs the champion's data",
        description="binary: change of the positive rate (0..1); multiclass: largest change of "
        "a class's share (0..1); regression: change of the label mean in the champion data's "
        "label standard deviations. A larger change fails validation unless accept_shift is set.",
        minimum=0,
        env="MLOPS_MAX_LABEL_SHIFT",
    )
    accept_shift: bool = option(
        False,
        help="this run means to learn a new label distribution (recorded on the version)",
        title="Accept a label-rate shift",
        description="Set only when the labels' new distribution is intended; it is recorded.",
    )


@dataclass(frozen=True)
class TrainParams:
    """LightGBM hyper-parameters (also part of the training key)."""

    learning_rate: float = option(0.05, help="LightGBM learning rate", exclusive_minimum=0)
    num_leaves: int = option(31, help="LightGBM leaves per tree", minimum=2)
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.9
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_rounds: int = option(1000, help="boosting rounds at most (early stopping)", minimum=1)
    early_stopping_rounds: int = 30
    seed: int = option(DEFAULT_SEED, help="random seed", title="Random seed", env=_SEED_ENV)
    num_threads: int = 2


@dataclass(frozen=True)
class EvaluationPolicy:
    """How ``evaluate`` compares challenger and champion."""

    bootstrap_resamples: int = option(
        1000, help="paired bootstrap resamples of the primary metric's delta", minimum=1
    )


@dataclass(frozen=True)
class GateThresholds:
    """The model-independent part of the quality gate; the metric checks come from the model's
    contract (``gate.checks``) unless a run overrides them with ``checks``."""

    max_latency_ms: float = option(
        25.0,
        help="Gate: max p95 latency per row (ms)",
        exclusive_minimum=0,
        env="MLOPS_GATE_MAX_LATENCY_MS",
    )
    # The champion's primary metric on the new hold-out against its own training-time value, in
    # the metric's units and worse direction: a collapse means the new labels disagree with the
    # old ones (AUC 0.87 -> 0.13 on flipped labels), not that the challenger is better, so a
    # person must review it.
    max_champion_collapse: float = option(
        0.2,
        help="Gate: how much the champion's primary metric may worsen on the new hold-out "
        "(vs its training-time value, in the metric's units) before review is needed",
        title="Gate: max champion collapse on the primary metric (else needs review)",
        minimum=0,
        env="MLOPS_GATE_MAX_CHAMPION_COLLAPSE",
    )
    # A model retrained on served traffic is judged on two hold-outs: the recent labelled traffic
    # (the metric checks below) and the hold-out of the champion's training data, what must not
    # be forgotten, where its primary metric may be worse than the champion's by this share.
    max_reference_relative_drop: float = option(
        0.03,
        help="Gate, a model trained on served traffic: how much worse than the champion its "
        "primary metric may be on the champion's reference hold-out, as a share of the "
        "champion's value",
        title="Gate: max relative loss vs the champion on the reference hold-out",
        minimum=0,
        maximum=0.5,  # beyond half of the champion's value the check would pass anything
        env="MLOPS_GATE_MAX_REFERENCE_RELATIVE_DROP",
    )
    # This run's metric checks instead of the contract's, as JSON: a list of checks shaped like
    # the contract's gate.checks, e.g. [{"metric": "auc", "threshold": 0.9}].
    checks: str = option(
        "",
        help="Gate: the metric checks for this run as a JSON list shaped like the contract's "
        'gate.checks, e.g. \'[{"metric": "auc", "threshold": 0.9, "min_absolute_change": '
        "-0.01}]'; empty: the model contract's checks",
        title="Gate: metric checks for this run (JSON; empty = the model contract's)",
        description='A JSON list like [{"metric": "auc", "threshold": 0.9}]: each check has a '
        "metric of the model's task and threshold, min_absolute_change and/or "
        "min_relative_change (vs the champion; negative = tolerated loss). Empty: the checks "
        "in the model's contract.",
        flag="--checks",
        param="gate_checks",
    )


#: A comma-separated list of percentages (the Param's JSON Schema pattern; the rest of the rules
#: -- increasing, ending at 100, at least one judged step -- are :func:`traffic_steps`').
STEPS_PATTERN = r"\s*\d+(\.\d+)?\s*(,\s*\d+(\.\d+)?\s*)*"


def traffic_steps(text: str) -> tuple[float, ...]:
    """The steps in percent; ValueError when they would skip the analysis or not end in a
    promotion: each above 0, strictly increasing, the last exactly 100, one or more below it."""
    try:
        steps = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"canary steps {text!r} are not comma-separated percentages") from None
    if any(not 0 < step <= 100 for step in steps):
        raise ValueError(f"canary steps {text!r}: every step must be above 0 and at most 100")
    if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        raise ValueError(f"canary steps {text!r} must increase")
    if steps[-1] != 100:
        raise ValueError(f"canary steps {text!r} must end at 100 (the promotion)")
    if len(steps) < 2:
        raise ValueError(
            f"canary steps {text!r} judge nothing: give at least one step below 100 (e.g. 10,100)"
        )
    return steps


@dataclass(frozen=True)
class CanaryPolicy:
    """How the candidate meets traffic: an optional shadow phase, then traffic steps.

    As Argo Rollouts' and Flagger's canary steps: the candidate takes each step's share of the
    answers in turn, the analysis judges it at every step below 100 %, and the last step (always
    100 %) is the promotion. With ``shadow_share`` above 0 it first scores that share of the
    requests without answering any (the stable version answers them), judged against the stable
    answers to the same requests before any user sees it.
    """

    steps: str = option(
        "5,25,50,100",
        help="traffic steps in percent: increasing, the last 100 (the promotion); the analysis "
        "judges every step below 100",
        title="Canary traffic steps (%)",
        description="Comma-separated shares, e.g. 5,25,50,100: the analysis runs at each step "
        "below 100; any failed step rolls back to 0 %.",
        pattern=STEPS_PATTERN,
        param="canary_steps",
        env="MLOPS_CANARY_STEPS",
    )
    shadow_share: float = option(
        0.0,
        help="share of requests the candidate scores in shadow before the first step (0: off)",
        title="Shadow share (0 = no shadow phase)",
        description="The candidate scores this share of real requests without answering them; "
        "the analysis compares it with the stable answers before the first traffic step.",
        minimum=0,
        maximum=1,
        env="MLOPS_SHADOW_SHARE",
    )

    def __post_init__(self) -> None:
        traffic_steps(self.steps)  # ValueError naming what is wrong

    @property
    def weights(self) -> tuple[float, ...]:
        """The judged steps as shares of traffic (the final 100 % is the promotion)."""
        return tuple(share / 100 for share in traffic_steps(self.steps)[:-1])


@dataclass(frozen=True)
class AnalysisPolicy:
    """How much traffic the canary analysis drives and what the canary must meet."""

    rounds: int = option(
        3, help="analysis rounds", title="Rounds", minimum=1, maximum=100, param="analysis_rounds"
    )
    requests_per_round: int = option(
        300,
        help="replayed requests per round",
        title="Replayed requests per round",
        minimum=20,
        maximum=100_000,
    )
    interval_s: float = option(
        5.0,
        help="seconds between rounds",
        title="Seconds between rounds",
        minimum=0,
        param="round_interval_s",
    )
    max_failed_rounds: int = option(
        2,
        help="roll back after this many failed rounds (at most --rounds)",
        title="Roll back after this many failed rounds (at most the rounds)",
        minimum=1,
    )
    concurrency: int = 4
    min_canary_requests: int = 20
    max_error_rate: float = option(0.01, help="max canary error rate", minimum=0, maximum=1)
    max_p99_ms: float = option(100.0, help="max canary p99 latency (ms)", exclusive_minimum=0)
    # PSI of the prediction distribution: the score histogram (binary), the predicted-class
    # counts (multiclass) or the value histogram (regression).
    # Shadow phase: the share of shadow answers that agree with the stable answer to the same
    # request (same side of 0.5, same class, or within 10 % of the value).
    min_shadow_agreement: float = option(
        0.8,
        help="min share of shadow answers agreeing with the stable ones (shadow phase)",
        title="Min shadow agreement",
        minimum=0,
        maximum=1,
    )
    max_psi: float = option(
        0.25,
        help="max PSI of the predictions (score, class mix or value) canary vs stable",
        title="Max prediction PSI",
        exclusive_minimum=0,
    )
    # Classification (binary, multiclass): accuracy on the golden set.
    max_accuracy_drop: float = option(
        0.05, help="max accuracy drop vs stable (classification)", minimum=0, maximum=1
    )
    # Used alone when no stable version serves (the first release of a classifier).
    min_accuracy: float = option(
        0.75,
        help="min canary accuracy (first release of a classifier)",
        minimum=0,
        maximum=1,
        env="MLOPS_ANALYSIS_MIN_ACCURACY",
    )
    # Regression: the golden set's RMSE (or MAE when that is the primary metric) may exceed the
    # stable's (first release: the candidate's own hold-out value) by this share.
    max_error_increase: float = option(
        0.1,
        help="max relative increase of the canary's RMSE/MAE vs stable (regression)",
        title="Max error increase vs stable (regression)",
        minimum=0,
        maximum=10,
    )
    # The labelled rows replayed (release/golden.py): this pinned set if given, else the
    # champion's hold-out; never rows of the candidate's own partition, unless a first release
    # (no champion) is explicitly allowed to be judged on its own hold-out.
    reference_set: str = option(
        "",
        help="labelled partition replayed instead of the champion's hold-out, pinned as "
        "KEY@DATA_SHA256 (empty: the champion's hold-out)",
        env="MLOPS_ANALYSIS_REFERENCE_SET",
    )
    first_release: str = option(
        "refuse",
        help="with no champion and no reference set: refuse, or judge on the candidate's own "
        "hold-out (its accuracy then only shows the service reproduces the offline score)",
        choices=("refuse", "candidate_holdout"),
        env="MLOPS_ANALYSIS_FIRST_RELEASE",
    )

    cross_checks: ClassVar[tuple[AtMost, ...]] = (
        AtMost(
            "max_failed_rounds",
            "rounds",
            why="a run whose every round failed would still pass",
        ),
    )

    def __post_init__(self) -> None:
        check_cross_fields(self)


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


#: An alias (a name starting with a letter) or a version number (digits, from 1).
MODEL_REF_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}|[1-9][0-9]{0,9}"


@dataclass(frozen=True)
class BatchScoringPolicy:
    """What ``score-batch`` scores, with which version, where it writes and in what steps.

    The table is read, scored and written ``chunk_rows`` rows at a time (only the contract's
    columns are read), so the step's memory depends on the chunk, not on the table."""

    input_uri: str = option(
        "",
        help="the table to score: a path, file:// or s3:// URI of a .csv, .csv.gz or .parquet "
        "file, or of a directory (prefix) of Parquet files; '{model}' becomes the model's name",
        title="Input table",
        description="A path, file:// or s3:// URI of a CSV/Parquet file or a directory (prefix) "
        "of Parquet files holding the contract's id column and features.",
        flag="--input",
        env="MLOPS_BATCH_SCORING_INPUT",
    )
    output_uri: str = option(
        "",
        help="where scored runs go (run=<partition>/ below it): a path, file:// or s3:// URI; "
        "'{model}' becomes the model's name; empty: $MLOPS_DATA_ROOT/scores/<model>",
        title="Output directory (empty: $MLOPS_DATA_ROOT/scores/<model>)",
        flag="--output",
        env="MLOPS_BATCH_SCORING_OUTPUT",
    )
    model_ref: str = option(
        "champion",
        help="the registered version that scores: an alias (champion) or a version number",
        title="Model alias or version",
        description="An alias such as champion, or a version number such as 7.",
        pattern=MODEL_REF_PATTERN,
    )
    chunk_rows: int = option(
        100_000,
        help="rows read, scored and written at a time (bounds the step's memory)",
        title="Rows per chunk",
        minimum=100,
        maximum=2_000_000,
        env="MLOPS_BATCH_SCORING_CHUNK_ROWS",
    )
