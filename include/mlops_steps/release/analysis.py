"""Automated canary analysis: replay an independent golden set through the service and judge.

Each round sends ``requests_per_round`` labelled rows of a golden set that is not the candidate's
own data (release/golden.py: a pinned reference set, else the champion's hold-out) through
``/predict`` (release/replay.py) and reads the service's Prometheus metrics before and after,
counting only the samples of the versions judged (the canary's and the stable one's ``version``
label). The judgement compares the canary with the stable variant on what the service itself
measured (error rate, p99 latency, score distribution), on accuracy against the replayed labels,
and on the requests that got no usable answer at all (client errors). Rates and latency are
judged per round; distribution and accuracy on everything seen so far (a round of a few dozen
canary rows is too noisy on its own), and the PSI limit grows by what two samples of that size
reach by chance, so a small canary is not rejected for sampling noise.

Fail closed: a round with no canary traffic, no stable traffic while a stable version serves,
missing series or a NaN is a failed round; metrics without a version label, a traffic change
during the analysis or no independent golden set stop it. The run passes only when it completed
every round it was asked for and failed fewer than ``max_failed_rounds`` (at most ``rounds``,
a cross check of the policy); reaching that many ends it early with a rejection. The verdict and
every round's numbers go to ``analysis.json``.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.core.settings import Settings
from mlops_steps.release.golden import current_champion, golden_set
from mlops_steps.release.replay import CANARY, STABLE, Replay, replay_round
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import TrafficState

_Z_99 = 2.326  # the standard normal's 99th percentile
_JUDGED = ("serving_requests_total", "serving_request_latency_seconds_bucket")
_SCORES = "serving_prediction_score_bucket"


class CanaryFailed(StepError):
    """The canary did worse than allowed; the deployment DAG rolls it back."""


@dataclass
class Snapshot:
    """The service's counters for one variant at one moment (from /metrics)."""

    requests: dict[str, float] = field(default_factory=dict)  # status -> count
    latency_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    score_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


def parse_metrics(
    text: str, versions: Mapping[str, str | None], endpoint: str = "predict"
) -> dict[str, Snapshot]:
    """Per-variant counters of the versions judged, from the service's Prometheus text.

    A sample counts only when its ``version`` label is the version ``versions`` names for its
    variant (another version's samples, e.g. of a canary retired before this one, are ignored);
    a sample without the label (a service older than it) fails closed.
    """
    from prometheus_client.parser import text_string_to_metric_families

    snapshots: dict[str, Snapshot] = defaultdict(Snapshot)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            variant = labels.get("variant")
            if variant not in (STABLE, CANARY):
                continue
            judged = sample.name in _JUDGED and labels.get("endpoint") == endpoint
            if not judged and sample.name != _SCORES:
                continue
            if "version" not in labels:
                raise CanaryFailed(
                    f"has no 'version' label on {sample.name}, so the metrics of the version "
                    "judged cannot be told from any other's",
                    subject="the service's /metrics",
                    fix="upgrade the model service to one that labels its metrics by version",
                )
            if labels["version"] != versions.get(variant):
                continue
            snap = snapshots[variant]
            if sample.name == "serving_requests_total":
                status = labels["status"]
                snap.requests[status] = snap.requests.get(status, 0.0) + sample.value
            else:
                le = float(labels["le"])
                buckets = snap.score_buckets if sample.name == _SCORES else snap.latency_buckets
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return dict(snapshots)


def _add(into: dict[Any, float], more: dict[Any, float]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0.0) + value


def merge(snapshots: Iterable[dict[str, Snapshot]]) -> dict[str, Snapshot]:
    """The sum of several processes' counters, per variant."""
    total: dict[str, Snapshot] = defaultdict(Snapshot)
    for per_variant in snapshots:
        for variant, snap in per_variant.items():
            _add(total[variant].requests, snap.requests)
            _add(total[variant].latency_buckets, snap.latency_buckets)
            _add(total[variant].score_buckets, snap.score_buckets)
    return dict(total)


def _delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
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


def psi(expected_cumulative: dict[float, float], actual_cumulative: dict[float, float]) -> float:
    """Population stability index between two histograms (NaN if either is empty).

    Half a count is added to every bucket (Jeffreys smoothing): an empty bucket in a small
    sample would otherwise dominate the index through log(0).
    """
    bounds = sorted(set(expected_cumulative) | set(actual_cumulative))
    shares = []
    for cumulative in (expected_cumulative, actual_cumulative):
        counts = _bucket_counts(cumulative, bounds)
        if counts.sum() <= 0:
            return math.nan
        shares.append((counts + 0.5) / (counts.sum() + 0.5 * len(bounds)))
    expected, actual = shares
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_noise_allowance(
    expected_cumulative: dict[float, float], actual_cumulative: dict[float, float]
) -> float:
    """How much PSI two samples of the *same* distribution reach by chance (99th percentile).

    For two samples of n1 and n2 rows over k buckets, PSI is approximately chi-squared with k-1
    degrees of freedom scaled by (1/n1 + 1/n2); a canary of a few dozen rows needs this slack,
    a canary of thousands hardly any.
    """
    from scipy.stats import chi2

    bounds = sorted(set(expected_cumulative) | set(actual_cumulative))
    n1 = _bucket_counts(expected_cumulative, bounds).sum()
    n2 = _bucket_counts(actual_cumulative, bounds).sum()
    if n1 <= 0 or n2 <= 0 or len(bounds) < 2:
        return math.nan
    return float(chi2.ppf(0.99, len(bounds) - 1) * (1.0 / n1 + 1.0 / n2))


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


def judge_round(
    policy: AnalysisPolicy,
    *,
    before: dict[str, Snapshot],
    after: dict[str, Snapshot],
    since_start: dict[str, Snapshot],
    replay: Replay,
    has_stable: bool,
) -> dict[str, Any]:
    """One round's checks; every check that cannot be computed fails."""
    empty = Snapshot()
    stats: dict[str, dict[str, float]] = {}
    for variant in (STABLE, CANARY):
        now, then = after.get(variant, empty), before.get(variant, empty)
        statuses = {s: now.requests.get(s, 0.0) - then.requests.get(s, 0.0) for s in now.requests}
        total = sum(statuses.values())
        errors = sum(n for s, n in statuses.items() if not s.startswith("2"))
        latency = _delta(now.latency_buckets, then.latency_buckets)
        stats[variant] = {
            "requests": total,
            "error_rate": errors / total if total else math.nan,
            "p99_ms": histogram_quantile(0.99, latency) * 1000.0,
            "accuracy": replay.accuracy(variant),
        }
    baseline = since_start.get(STABLE, empty).score_buckets
    candidate = since_start.get(CANARY, empty).score_buckets
    drift = psi(baseline, candidate) if has_stable else 0.0
    psi_limit = policy.max_psi + psi_noise_allowance(baseline, candidate) if has_stable else 0.0
    canary, stable = stats[CANARY], stats[STABLE]
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float, limit: float, ok: bool) -> None:
        checks.append({"check": name, "value": value, "limit": limit, "passed": bool(ok)})

    check(
        "client_errors",
        replay.failures,
        policy.max_error_rate * replay.sent,
        replay.sent > 0 and replay.failures <= policy.max_error_rate * replay.sent,
    )
    check(
        "canary_requests",
        canary["requests"],
        policy.min_canary_requests,
        canary["requests"] >= policy.min_canary_requests,
    )
    if has_stable:
        check("stable_requests", stable["requests"], 1, stable["requests"] >= 1)
    check(
        "canary_error_rate",
        canary["error_rate"],
        policy.max_error_rate,
        canary["error_rate"] <= policy.max_error_rate,
    )
    check(
        "canary_p99_ms", canary["p99_ms"], policy.max_p99_ms, canary["p99_ms"] <= policy.max_p99_ms
    )
    if has_stable:
        check("score_psi", drift, psi_limit, drift <= psi_limit)
        floor = (
            stable["accuracy"]
            - policy.max_accuracy_drop
            - accuracy_noise_allowance(
                stable["accuracy"],
                len(replay.labels.get(STABLE, [])),
                len(replay.labels.get(CANARY, [])),
            )
        )
        check("canary_accuracy", canary["accuracy"], floor, canary["accuracy"] >= floor)
    else:
        check(
            "canary_accuracy",
            canary["accuracy"],
            policy.min_accuracy,
            canary["accuracy"] >= policy.min_accuracy,
        )
    # NaN compares False above, so a missing metric has already failed its check.
    return {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "variants": stats,
        "score_psi": drift,
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


def run_analysis(
    settings: Settings, version: str, partition_key: str, policy: AnalysisPolicy
) -> dict[str, Any]:
    """Drive traffic round by round and judge; raises CanaryFailed on a rejection.

    ``partition_key`` is the candidate's own partition: never replayed (release/golden.py).
    """
    import requests

    target = open_target(settings)
    traffic = target.state()
    _require_canary(traffic, traffic, version)
    has_stable = traffic.stable_version is not None and traffic.canary_weight < 1.0
    golden = golden_set(
        settings, policy, candidate_partition=partition_key, champion=current_champion(settings)
    )
    versions = {STABLE: traffic.stable_version, CANARY: version}
    base = settings.deploy.service_url
    rng = random.Random(f"{version}-{golden.partition}")  # noqa: S311 (sampling, not security)
    replay, rounds = Replay(), list[dict[str, Any]]()
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=policy.concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def scrape() -> dict[str, Snapshot]:
        urls = target.metrics_urls()
        if not urls:
            raise CanaryFailed("no serving process exposes metrics", subject=f"canary v{version}")
        texts = []
        for url in urls:
            response = session.get(url, timeout=10)
            response.raise_for_status()
            texts.append(response.text)
        return merge(parse_metrics(text, versions) for text in texts)

    start = scrape()
    for number in range(1, policy.rounds + 1):
        _require_canary(target.state(), traffic, version)
        before = scrape()
        sample = [
            golden.rows[rng.randrange(len(golden.rows))] for _ in range(policy.requests_per_round)
        ]
        tag = f"canary-v{version}-r{number}"
        replay_round(
            session,
            f"{base}/predict",
            sample,
            concurrency=policy.concurrency,
            tag=tag,
            replay=replay,
        )
        after = scrape()
        since_start = {
            v: Snapshot(
                score_buckets=_delta(after[v].score_buckets, start.get(v, Snapshot()).score_buckets)
            )
            for v in after
        }
        verdict = judge_round(
            policy,
            before=before,
            after=after,
            since_start=since_start,
            replay=replay,
            has_stable=has_stable,
        )
        verdict["round"] = number
        rounds.append(verdict)
        if overall(policy, rounds)["failed_rounds"] >= policy.max_failed_rounds:
            break
        if number < policy.rounds:
            time.sleep(policy.interval_s)
    summary = overall(policy, rounds)
    result = {
        "version": version,
        **summary,
        "rounds": rounds,
        "compared_with_stable": has_stable,
        "golden_set": golden.describe(),
        "traffic": traffic.as_dict(),
        "policy": asdict(policy),
    }
    from mlops_steps.release.ledger import write_result

    write_result(settings, version, "analysis", result)
    if not summary["passed"]:
        raise CanaryFailed(
            f"failed {summary['failed_rounds']} of {len(rounds)} rounds (asked for "
            f"{policy.rounds}; {', '.join(summary['failed_checks']) or 'no check failed'})",
            subject=f"canary v{version}",
            fix="see analysis.json for each round's numbers; the rollback task restores traffic",
        )
    return result


def _require_canary(now: TrafficState, at_start: TrafficState, version: str) -> None:
    """The canary is ``version`` and the stable version is the one the analysis started with."""
    if now.canary_version != version or now.canary_weight <= 0:
        raise CanaryFailed(
            f"is not serving as the canary (target: canary v{now.canary_version} at "
            f"{now.canary_weight})",
            subject=f"v{version}",
            fix="the canary task must run first; something else changed the traffic",
        )
    if now.stable_version != at_start.stable_version:
        raise CanaryFailed(
            f"was being compared with stable v{at_start.stable_version}, but the stable version "
            f"is now v{now.stable_version}",
            subject=f"canary v{version}",
            fix="releases must not overlap (the promotion pool serialises them); re-run",
        )
