"""The canary judgement: pure functions of the service's counters and the replayed answers.

What is compared follows the model's task (:class:`Judged`):

* the prediction distribution, canary against stable, as a PSI whose limit grows by what two
  samples of that size reach by chance: the score histogram (binary, ``score_psi``), the counts
  of predicted classes (multiclass, ``class_mix_psi``), the value histogram whose buckets the
  training distribution set (regression, ``value_psi``);
* quality on the golden set's labels: accuracy (binary at 0.5, multiclass on the answered class;
  ``canary_accuracy``) may fall below the stable's by ``max_accuracy_drop`` plus sampling noise;
  RMSE or MAE (regression; ``canary_rmse``/``canary_mae``) may exceed the stable's by the share
  ``max_error_increase`` plus sampling noise. With no stable version, a classifier must reach
  ``min_accuracy`` and a regressor its own training-time hold-out error by the same share.

Every check that cannot be computed (no rows, NaN) fails: NaN compares False.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.release.replay import CANARY, STABLE, Replay

_Z_99 = 2.326  # the standard normal's 99th percentile
_SHIFT_CHECK = {"binary": "score_psi", "multiclass": "class_mix_psi", "regression": "value_psi"}


@dataclass
class Snapshot:
    """The service's counters for one variant at one moment (from /metrics)."""

    requests: dict[str, float] = field(default_factory=dict)  # status -> count
    latency_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    score_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    classes: dict[str, float] = field(default_factory=dict)  # predicted class -> count
    # Shadow variant only: its answers compared with the stable answer to the same request.
    agreement: dict[str, float] = field(default_factory=dict)  # "agree"/"disagree" -> count


@dataclass(frozen=True)
class Judged:
    """What the analysis compares for a model: its task, the quality metric on the golden set,
    the classes (multiclass) and, for a regressor's first release, its own hold-out error."""

    task: str = "binary"
    metric: str = "accuracy"  # accuracy | rmse | mae
    classes: tuple[str, ...] = ()
    offline_error: float | None = None  # the candidate's mlops.holdout_<metric> (regression)

    @classmethod
    def of(cls, contract: Any, candidate_tags: dict[str, str] | None = None) -> Judged:
        """From a model contract (and the candidate version's tags, for a regressor)."""
        if contract.task != "regression":
            return cls(contract.task, "accuracy", tuple(contract.class_labels))
        metric = contract.primary_metric if contract.primary_metric in ("rmse", "mae") else "rmse"
        raw = (candidate_tags or {}).get(f"mlops.holdout_{metric}")
        try:
            offline = float(raw) if raw is not None else None
        except ValueError:
            offline = None
        return cls("regression", metric, (), offline)

    @property
    def shift_check(self) -> str:
        return _SHIFT_CHECK[self.task]

    @property
    def quality_check(self) -> str:
        return f"canary_{self.metric}"


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket (NaN if empty)."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return math.nan
    rank = q * cumulative[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            width = count - lower_count
            fraction = (rank - lower_count) / width if width else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return math.nan


def _bucket_counts(cumulative: dict[float, float], bounds: list[float]) -> np.ndarray:
    return np.diff([0.0, *(cumulative.get(b, 0.0) for b in bounds)])


def psi_of_counts(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> float:
    """PSI between two count vectors over the same bins (NaN if either is empty).

    Half a count is added to every bin (Jeffreys smoothing): an empty bin in a small sample
    would otherwise dominate the index through log(0).
    """
    shares = []
    for counts in (np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)):
        if counts.sum() <= 0:
            return math.nan
        shares.append((counts + 0.5) / (counts.sum() + 0.5 * len(counts)))
    first, second = shares
    return float(np.sum((second - first) * np.log(second / first)))


def psi_noise_of_counts(n_expected: float, n_actual: float, bins: int) -> float:
    """How much PSI two samples of the *same* distribution reach by chance (99th percentile).

    For two samples of n1 and n2 rows over k bins, PSI is approximately chi-squared with k-1
    degrees of freedom scaled by (1/n1 + 1/n2); a canary of a few dozen rows needs this slack,
    a canary of thousands hardly any.
    """
    from scipy.stats import chi2

    if n_expected <= 0 or n_actual <= 0 or bins < 2:
        return math.nan
    return float(chi2.ppf(0.99, bins - 1) * (1.0 / n_expected + 1.0 / n_actual))


def psi(expected_cumulative: dict[float, float], actual_cumulative: dict[float, float]) -> float:
    """Population stability index between two cumulative histograms (NaN if either is empty)."""
    bounds = sorted(set(expected_cumulative) | set(actual_cumulative))
    return psi_of_counts(
        _bucket_counts(expected_cumulative, bounds), _bucket_counts(actual_cumulative, bounds)
    )


def psi_noise_allowance(
    expected_cumulative: dict[float, float], actual_cumulative: dict[float, float]
) -> float:
    """:func:`psi_noise_of_counts` for two cumulative histograms."""
    bounds = sorted(set(expected_cumulative) | set(actual_cumulative))
    n1 = _bucket_counts(expected_cumulative, bounds).sum()
    n2 = _bucket_counts(actual_cumulative, bounds).sum()
    return psi_noise_of_counts(n1, n2, len(bounds))


def class_mix_shift(
    stable: dict[str, float], canary: dict[str, float], classes: Sequence[str] = ()
) -> tuple[float, float]:
    """PSI of the predicted-class counts and its noise allowance; every class of the model is a
    bin (a class one variant never predicts still counts, as zero)."""
    names = sorted(set(classes) | set(stable) | set(canary))
    expected = [stable.get(c, 0.0) for c in names]
    actual = [canary.get(c, 0.0) for c in names]
    return psi_of_counts(expected, actual), psi_noise_of_counts(
        sum(expected), sum(actual), len(names)
    )


def accuracy_noise_allowance(accuracy: float, n_stable: int, n_canary: int) -> float:
    """How far the canary's accuracy falls below the stable's by chance alone (99 %, one-sided).

    Each variant answers a different sample of the golden set (the routing key decides), so two
    equally good models differ by about sqrt(p(1-p)(1/n1 + 1/n2)): 0.08 with the few dozen canary
    rows of a first round, 0.02 with a thousand. Without it a 10 % canary is rejected for
    sampling noise (seen: 0.77 on 91 rows against 0.83 on 809, for a model as good offline).
    NaN when either side has no rows, so the check fails.
    """
    if n_stable <= 0 or n_canary <= 0 or not math.isfinite(accuracy):
        return math.nan
    share = min(max(accuracy, 0.0), 1.0)
    return _Z_99 * math.sqrt(share * (1.0 - share) * (1.0 / n_stable + 1.0 / n_canary))


def error_noise_allowance(
    metric: str, reference_errors: Sequence[float] | np.ndarray, n_reference: float, n_canary: int
) -> float:
    """How far the canary's RMSE/MAE exceeds the reference's by chance alone (99 %, one-sided),
    both variants' errors drawn like ``reference_errors``.

    MAE is a mean of |e|: its difference between two samples has the standard error
    sd(|e|) sqrt(1/n1 + 1/n2). RMSE is sqrt(mean e²): by the delta method sd(e²) sqrt(1/n1 +
    1/n2) / (2 RMSE). ``n_reference`` may be ``inf`` (a training-time value taken as exact).
    NaN without rows on either side, so the check fails.
    """
    errors = np.asarray(reference_errors, dtype=float)
    if len(errors) < 2 or n_reference <= 0 or n_canary <= 0:
        return math.nan
    spread = math.sqrt(1.0 / n_reference + 1.0 / n_canary)
    if metric == "mae":
        return _Z_99 * float(np.std(np.abs(errors), ddof=1)) * spread
    rmse = math.sqrt(float(np.mean(errors**2)))
    if rmse <= 0:
        return 0.0
    return _Z_99 * float(np.std(errors**2, ddof=1)) * spread / (2.0 * rmse)


def _quality_checks(
    policy: AnalysisPolicy, judged: Judged, replay: Replay, has_stable: bool
) -> dict[str, Any]:
    """The golden-set check: (value, limit, passed) of the canary's quality metric."""
    n_stable, n_canary = replay.rows(STABLE), replay.rows(CANARY)
    canary = replay.quality(CANARY, judged.metric)
    if judged.metric == "accuracy":
        if not has_stable:
            return {"value": canary, "limit": policy.min_accuracy,
                    "passed": canary >= policy.min_accuracy}  # fmt: skip
        stable = replay.quality(STABLE, "accuracy")
        floor = (
            stable - policy.max_accuracy_drop - accuracy_noise_allowance(stable, n_stable, n_canary)
        )
        return {"value": canary, "limit": floor, "passed": canary >= floor}
    # Regression: a relative bound on the error, plus what sampling alone adds.
    if has_stable:
        reference = replay.quality(STABLE, judged.metric)
        noise = error_noise_allowance(judged.metric, replay.errors(STABLE), n_stable, n_canary)
    else:
        reference = math.nan if judged.offline_error is None else judged.offline_error
        noise = error_noise_allowance(judged.metric, replay.errors(CANARY), math.inf, n_canary)
    ceiling = reference * (1.0 + policy.max_error_increase) + noise
    return {"value": canary, "limit": ceiling, "passed": canary <= ceiling}


def served_stats(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """A variant's requests in a round, their error rate and p99 (ms); NaN rate without any."""
    statuses = {s: after.requests.get(s, 0.0) - before.requests.get(s, 0.0) for s in after.requests}
    total = sum(statuses.values())
    errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
    latency = delta(after.latency_buckets, before.latency_buckets)
    return {
        "requests": total,
        "error_rate": errors / total if total else math.nan,
        "p99_ms": histogram_quantile(0.99, latency) * 1000.0,
    }


def prediction_shift(
    policy: AnalysisPolicy, judged: Judged, base: Snapshot, other: Snapshot
) -> tuple[float, float]:
    """(shift, limit) of ``other``'s predictions against ``base``'s: the class-mix PSI for a
    multiclass model, else the score (value) histogram's PSI, each with its noise allowance."""
    if judged.task == "multiclass":
        shift, noise = class_mix_shift(base.classes, other.classes, judged.classes)
        return shift, policy.max_psi + noise
    shift = psi(base.score_buckets, other.score_buckets)
    return shift, policy.max_psi + psi_noise_allowance(base.score_buckets, other.score_buckets)


class Checks(list[dict[str, Any]]):
    """A round's checks as the analysis reports them: name, value, limit, passed (a NaN value
    compares False, so a check that could not be computed has failed)."""

    def add(self, name: str, value: float, limit: float, ok: bool) -> None:
        self.append({"check": name, "value": value, "limit": limit, "passed": bool(ok)})

    def served(self, prefix: str, stats: dict[str, float], policy: AnalysisPolicy) -> None:
        """Enough requests of the judged variant, its error rate and its p99."""
        requests, rate, p99 = stats["requests"], stats["error_rate"], stats["p99_ms"]
        self.add(f"{prefix}_requests", requests, policy.min_canary_requests,
                 requests >= policy.min_canary_requests)  # fmt: skip
        self.add(f"{prefix}_error_rate", rate, policy.max_error_rate, rate <= policy.max_error_rate)
        self.add(f"{prefix}_p99_ms", p99, policy.max_p99_ms, p99 <= policy.max_p99_ms)

    def client_errors(self, replay: Replay, policy: AnalysisPolicy) -> None:
        """Requests of the replay that got no usable answer at all."""
        limit = policy.max_error_rate * replay.sent
        self.add("client_errors", replay.failures, limit,
                 replay.sent > 0 and replay.failures <= limit)  # fmt: skip

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self)


def judge_round(
    policy: AnalysisPolicy,
    *,
    before: dict[str, Snapshot],
    after: dict[str, Snapshot],
    since_start: dict[str, Snapshot],
    replay: Replay,
    has_stable: bool,
    judged: Judged | None = None,
) -> dict[str, Any]:
    """One round's checks; every check that cannot be computed fails."""
    judged = judged or Judged()
    empty = Snapshot()
    stats = {
        variant: served_stats(before.get(variant, empty), after.get(variant, empty))
        | replay.summary(variant)
        for variant in (STABLE, CANARY)
    }
    base, cand = since_start.get(STABLE, empty), since_start.get(CANARY, empty)
    shift, shift_limit = prediction_shift(policy, judged, base, cand) if has_stable else (0.0, 0.0)
    checks = Checks()
    checks.client_errors(replay, policy)
    checks.served(CANARY, stats[CANARY], policy)
    if has_stable:
        stable_requests = stats[STABLE]["requests"]
        checks.add("stable_requests", stable_requests, 1, stable_requests >= 1)
        checks.add(judged.shift_check, shift, shift_limit, shift <= shift_limit)
    quality = _quality_checks(policy, judged, replay, has_stable)
    checks.add(judged.quality_check, quality["value"], quality["limit"], quality["passed"])
    return {
        "passed": checks.passed,
        "checks": list(checks),
        "variants": stats,
        judged.shift_check: shift,
        "prediction_shift": {"check": judged.shift_check, "psi": shift, "limit": shift_limit},
        "requests_sent": replay.sent,
        "client_errors": replay.failures,
    }


def overall(policy: AnalysisPolicy, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's verdict: it passes only when it completed every round it was asked for and
    failed fewer than ``max_failed_rounds`` of them."""
    failures = sum(not r["passed"] for r in rounds)
    return {
        "passed": len(rounds) >= policy.rounds and failures < policy.max_failed_rounds,
        "failed_rounds": failures,
        "rounds_completed": len(rounds),
        "rounds_asked": policy.rounds,
        "failed_checks": sorted(
            {c["check"] for r in rounds if not r["passed"] for c in r["checks"] if not c["passed"]}
        ),
    }
