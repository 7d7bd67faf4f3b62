"""The canary judgement on metric snapshots: passes a healthy canary, fails closed on anything
missing, and parses the service's real Prometheus text."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.release.analysis import (
    Replay,
    Snapshot,
    histogram_quantile,
    judge_round,
    merge,
    parse_metrics,
    psi,
)

POLICY = AnalysisPolicy(min_canary_requests=10)
SCORE_BOUNDS = [round(0.1 * i, 1) for i in range(1, 11)] + [math.inf]
LATENCY_BOUNDS = [0.001, 0.005, 0.01, 0.25, math.inf]


def _cumulative(bounds: list[float], counts: list[float]) -> dict[float, float]:
    total, out = 0.0, {}
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        out[bound] = total
    return out


def _snapshot(
    ok: float, errors: float = 0, slow: float = 0, scores: list[float] | None = None
) -> Snapshot:
    return Snapshot(
        requests={"200": ok, "500": errors},
        latency_buckets=_cumulative(LATENCY_BOUNDS, [ok + errors - slow, 0, 0, slow, 0]),
        score_buckets=_cumulative(SCORE_BOUNDS, scores or [10, 20, 30, 20, 10, 5, 3, 1, 1, 0, 0]),
    )


def _replay(stable_acc: float, canary_acc: float, n: int = 100) -> Replay:
    replay = Replay()
    for variant, accuracy in (("stable", stable_acc), ("canary", canary_acc)):
        right = round(n * accuracy)
        replay.labels[variant] = [1] * n
        replay.scores[variant] = [0.9] * right + [0.1] * (n - right)
    return replay


def _judge(after: dict[str, Snapshot], replay: Replay, has_stable: bool = True) -> dict:
    return judge_round(
        POLICY, before={}, after=after, since_start=after, replay=replay, has_stable=has_stable
    )


def _failed(verdict: dict) -> set[str]:
    return {c["check"] for c in verdict["checks"] if not c["passed"]}


def test_a_healthy_canary_passes() -> None:
    verdict = _judge({"stable": _snapshot(900), "canary": _snapshot(100)}, _replay(0.85, 0.84))
    assert verdict["passed"], verdict
    assert verdict["score_psi"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("canary", "replay", "failed"),
    [
        (_snapshot(95, errors=5), _replay(0.85, 0.85), {"canary_error_rate"}),
        (_snapshot(100, slow=5), _replay(0.85, 0.85), {"canary_p99_ms"}),
        (
            _snapshot(100, scores=[0, 0, 0, 0, 0, 1, 5, 20, 40, 34, 0]),
            _replay(0.85, 0.85),
            {"score_psi"},
        ),
        (_snapshot(100), _replay(0.85, 0.70), {"canary_accuracy"}),
    ],
    ids=["errors", "latency", "shifted-scores", "accuracy"],
)
def test_each_threshold_fails_the_round(canary: Snapshot, replay: Replay, failed: set) -> None:
    verdict = _judge({"stable": _snapshot(900), "canary": canary}, replay)
    assert not verdict["passed"]
    assert _failed(verdict) == failed


def test_no_canary_traffic_fails_closed() -> None:
    verdict = _judge({"stable": _snapshot(900)}, _replay(0.85, 0.85))
    assert {"canary_requests", "canary_error_rate", "canary_p99_ms", "score_psi"} <= _failed(
        verdict
    )


def test_no_stable_traffic_fails_when_a_stable_version_serves() -> None:
    verdict = _judge({"canary": _snapshot(100)}, _replay(0.85, 0.85))
    assert {"stable_requests", "score_psi"} <= _failed(verdict)


def test_missing_labels_fail_the_accuracy_check() -> None:
    verdict = _judge({"stable": _snapshot(900), "canary": _snapshot(100)}, Replay())
    assert _failed(verdict) == {"canary_accuracy"}


def test_first_release_is_judged_on_absolute_thresholds() -> None:
    verdict = _judge({"canary": _snapshot(100)}, _replay(0.0, 0.80), has_stable=False)
    assert verdict["passed"], verdict
    assert "score_psi" not in {c["check"] for c in verdict["checks"]}
    low = _judge({"canary": _snapshot(100)}, _replay(0.0, 0.60), has_stable=False)
    assert _failed(low) == {"canary_accuracy"}


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = {0.001: 50.0, 0.005: 90.0, 0.01: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.001)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.0075)
    assert math.isnan(histogram_quantile(0.99, {0.001: 0.0, math.inf: 0.0}))


def test_psi_of_empty_histograms_is_nan() -> None:
    assert math.isnan(psi({0.5: 0.0, 1.0: 0.0}, {0.5: 3.0, 1.0: 5.0}))


def test_parses_the_services_own_metrics_text() -> None:
    from mlops_serving.metrics import ServingMetrics

    metrics = ServingMetrics(CollectorRegistry())
    for variant, status, count in (
        ("stable", "200", 9),
        ("canary", "200", 2),
        ("canary", "500", 1),
    ):
        for _ in range(count):
            metrics.request("predict", variant, "7", int(status), 0.002)
    metrics.request("batch", "canary", "7", 200, 0.002)  # another endpoint: ignored
    metrics.scored("canary", "7", 0.35)
    parsed = parse_metrics(generate_latest(metrics.registry).decode())
    assert parsed["stable"].requests == {"200": 9.0}
    assert parsed["canary"].requests == {"200": 2.0, "500": 1.0}
    assert parsed["canary"].latency_buckets[0.0025] == 3.0
    assert parsed["canary"].score_buckets[0.4] == 1.0 and parsed["canary"].score_buckets[0.3] == 0


def test_small_samples_of_one_distribution_stay_within_the_noise_allowance() -> None:
    import numpy as np

    from mlops_steps.release.analysis import psi_noise_allowance

    rng = np.random.default_rng(0)
    false_alarms = 0
    for _ in range(200):
        scores = rng.beta(2, 5, size=400)
        stable, canary = scores[:360], scores[360:]  # a 10 % canary of 400 requests
        edges = [0, *SCORE_BOUNDS[:-1], 2]
        buckets = [
            _cumulative(SCORE_BOUNDS, list(np.histogram(s, bins=edges)[0]))
            for s in (stable, canary)
        ]
        limit = POLICY.max_psi + psi_noise_allowance(*buckets)
        false_alarms += psi(*buckets) > limit
    assert false_alarms <= 4  # about 1 % by construction
    shifted = _cumulative(SCORE_BOUNDS, [0, 0, 0, 1, 2, 4, 8, 10, 10, 5, 0])
    assert psi(buckets[0], shifted) > POLICY.max_psi + psi_noise_allowance(buckets[0], shifted)


def test_metrics_of_several_pods_add_up() -> None:
    one = {"stable": _snapshot(90), "canary": _snapshot(10, errors=1)}
    two = {"stable": _snapshot(80)}
    total = merge([one, two])
    assert total["stable"].requests == {"200": 170.0, "500": 0.0}
    assert total["canary"].requests == {"200": 10.0, "500": 1.0}
    assert total["stable"].score_buckets[math.inf] == 200.0
