"""Automated canary analysis: replay labelled hold-out rows through the service and judge.

Each round sends ``requests_per_round`` real rows of the candidate's own hold-out (customer id as
the routing key, so the canary gets its share) and reads the service's Prometheus metrics before and
after. The judgement compares the canary with the stable variant on what the service itself measured
(error rate, p99 latency, score distribution) and on accuracy against the replayed labels. Rates and
latency are judged per round; distribution and accuracy on everything seen so far (a round of a few
dozen canary rows is too noisy on its own), and the PSI limit grows by what two samples of that size
reach by chance, so a small canary is not rejected for sampling noise.

Fail closed: a round with no canary traffic, no stable traffic while a stable version serves,
missing series or a NaN is a failed round. ``max_failed_rounds`` failed rounds end the analysis
early with a rejection; the verdict and every round's numbers go to ``analysis.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.core.settings import Settings
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import TrafficState

STABLE, CANARY = "stable", "canary"


class CanaryFailed(StepError):
    """The canary did worse than allowed; the deployment DAG rolls it back."""


@dataclass
class Snapshot:
    """The service's counters for one variant at one moment (from /metrics)."""

    requests: dict[str, float] = field(default_factory=dict)  # status -> count
    latency_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    score_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


def parse_metrics(text: str, endpoint: str = "predict") -> dict[str, Snapshot]:
    """Per-variant counters from the service's Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    snapshots: dict[str, Snapshot] = defaultdict(Snapshot)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            variant = labels.get("variant")
            if variant not in (STABLE, CANARY):
                continue
            if sample.name == "serving_requests_total" and labels.get("endpoint") == endpoint:
                status = labels["status"]
                snap = snapshots[variant]
                snap.requests[status] = snap.requests.get(status, 0.0) + sample.value
            elif (
                sample.name == "serving_request_latency_seconds_bucket"
                and labels.get("endpoint") == endpoint
            ):
                le = float(labels["le"])
                buckets = snapshots[variant].latency_buckets
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name == "serving_prediction_score_bucket":
                le = float(labels["le"])
                buckets = snapshots[variant].score_buckets
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


@dataclass
class Replay:
    """What the client saw: per variant, labels and scores of answered rows, and errors."""

    labels: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: int = 0

    def accuracy(self, variant: str) -> float:
        labels, scores = self.labels.get(variant, []), self.scores.get(variant, [])
        if not labels:
            return math.nan
        predicted = np.asarray(scores) >= 0.5
        return float(np.mean(predicted == np.asarray(labels, dtype=bool)))


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
        floor = stable["accuracy"] - policy.max_accuracy_drop
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
        "client_errors": replay.failures,
    }


def _replay_rows(settings: Settings, partition_key: str) -> list[tuple[str, dict[str, Any], int]]:
    """(customer id, features, label) of the candidate's hold-out rows."""
    from mlops_steps.common.metrics import split_frame
    from mlops_steps.common.storage import Partition, load_partition_frame
    from mlops_steps.contract.schema import FEATURE_NAMES, ID_COLUMN, LABEL_COLUMN

    partition = Partition.of(settings.dataset_root, partition_key)
    frame, _ = load_partition_frame(partition)
    holdout = split_frame(frame).holdout
    features = holdout.loc[:, list(FEATURE_NAMES)]
    records = json.loads(features.to_json(orient="records"))
    return list(
        zip(
            holdout[ID_COLUMN].astype(str).tolist(),
            records,
            holdout[LABEL_COLUMN].astype(int).tolist(),
            strict=True,
        )
    )


Answer = tuple[int, str | None, float | None, int]  # status, variant, score, label


def _send(
    session: Any, url: str, rows: Iterable[tuple[str, dict[str, Any], int]], tag: str
) -> list[Answer]:
    out: list[Answer] = []
    for index, (entity, features, label) in enumerate(rows):
        body = {"features": features, "entity_id": entity, "request_id": f"{tag}-{index}"}
        try:
            response = session.post(url, json=body, timeout=10)
        except Exception:  # a refused or timed-out request counts as a failure
            out.append((0, None, None, label))
            continue
        payload = response.json() if response.status_code == 200 else {}
        out.append((response.status_code, payload.get("variant"), payload.get("score"), label))
    return out


def run_analysis(
    settings: Settings, version: str, partition_key: str, policy: AnalysisPolicy
) -> dict[str, Any]:
    """Drive traffic round by round and judge; raises CanaryFailed on a rejection."""
    import requests

    target = open_target(settings)
    traffic = target.state()
    _require_canary(traffic, version)
    has_stable = traffic.stable_version is not None and traffic.canary_weight < 1.0
    rows = _replay_rows(settings, partition_key)
    if not rows:
        raise CanaryFailed("has no hold-out rows to replay", subject=f"partition {partition_key}")
    base = settings.deploy.service_url
    rng = random.Random(f"{version}-{partition_key}")  # noqa: S311 (sampling, not security)
    replay, rounds, failures = Replay(), [], 0
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=policy.concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def scrape() -> dict[str, Snapshot]:
        urls = target.metrics_urls()
        if not urls:
            raise CanaryFailed("no serving process exposes metrics", subject=f"canary v{version}")
        return merge(parse_metrics(session.get(url, timeout=10).text) for url in urls)

    start = scrape()
    for number in range(1, policy.rounds + 1):
        _require_canary(target.state(), version)
        before = scrape()
        sample = [rows[rng.randrange(len(rows))] for _ in range(policy.requests_per_round)]
        shards = [sample[i :: policy.concurrency] for i in range(policy.concurrency)]
        tag = f"canary-v{version}-r{number}"
        with ThreadPoolExecutor(policy.concurrency) as pool:
            results = pool.map(
                _send,
                [session] * len(shards),
                [f"{base}/predict"] * len(shards),
                shards,
                [f"{tag}-{i}" for i in range(len(shards))],
            )
            for status, variant, score, label in (r for batch in results for r in batch):
                if status == 200 and variant in (STABLE, CANARY) and score is not None:
                    replay.labels[variant].append(label)
                    replay.scores[variant].append(float(score))
                else:
                    replay.failures += 1
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
        failures += not verdict["passed"]
        if failures >= policy.max_failed_rounds:
            break
        if number < policy.rounds:
            time.sleep(policy.interval_s)
    passed = failures < policy.max_failed_rounds
    failed_checks = sorted(
        {c["check"] for r in rounds if not r["passed"] for c in r["checks"] if not c["passed"]}
    )
    result = {
        "version": version,
        "passed": passed,
        "failed_rounds": failures,
        "rounds": rounds,
        "failed_checks": failed_checks,
        "compared_with_stable": has_stable,
        "traffic": traffic.as_dict(),
        "policy": asdict(policy),
    }
    from mlops_steps.release.ledger import write_result

    write_result(settings, version, "analysis", result)
    if not passed:
        raise CanaryFailed(
            f"failed {failures} of {len(rounds)} rounds ({', '.join(failed_checks)})",
            subject=f"canary v{version}",
            fix="see analysis.json for each round's numbers; the rollback task restores traffic",
        )
    return result


def _require_canary(traffic: TrafficState, version: str) -> None:
    if traffic.canary_version != version or traffic.canary_weight <= 0:
        raise CanaryFailed(
            f"is not serving as the canary (target: canary v{traffic.canary_version} at "
            f"{traffic.canary_weight})",
            subject=f"v{version}",
            fix="the canary task must run first; something else changed the traffic",
        )
