"""The release steps' policies: the canary's traffic steps and its automated analysis."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import ClassVar

from mlops_steps.core.options import AtMost, check_cross_fields, option

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
