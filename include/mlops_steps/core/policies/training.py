"""The training steps' policies: what ``ingest`` reads, what ``validate`` checks, how
``train`` fits, what ``evaluate`` and the gate judge."""

from __future__ import annotations

from dataclasses import dataclass

from mlops_steps.core.options import option

SYNTHETIC_SOURCE = "synthetic://churn"
DEFAULT_SEED = 42
_SEED_ENV = "MLOPS_DEFAULT_SEED"


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
