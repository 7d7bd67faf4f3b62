"""The canary judgement on metric snapshots: passes a healthy canary, fails closed on anything
missing (client errors included), counts only the versions judged in the service's real
Prometheus text, and passes a run only when every round asked for was completed."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mlops_steps.core.policies import AnalysisPolicy
from mlops_steps.release.analysis import (
    CanaryFailed,
    Snapshot,
    histogram_quantile,
    judge_round,
    merge,
    overall,
    parse_metrics,
    psi,
)
from mlops_steps.release.replay import Replay

POLICY = AnalysisPolicy(min_canary_requests=10)
VERSIONS = {"stable": "6", "canary": "7"}
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
    replay = Replay(sent=2 * n)
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
        (_snapshot(100), _replay(0.85, 0.70, n=1000), {"canary_accuracy"}),
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
    verdict = _judge({"stable": _snapshot(900), "canary": _snapshot(100)}, Replay(sent=100))
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
    for variant, version, status, count in (
        ("stable", "6", "200", 9),
        ("canary", "7", "200", 2),
        ("canary", "7", "500", 1),
        ("canary", "5", "500", 4),  # a canary retired earlier (or an old pod): not judged
        ("stable", "5", "200", 3),
    ):
        for _ in range(count):
            metrics.request("predict", variant, version, int(status), 0.002)
    metrics.request("batch", "canary", "7", 200, 0.002)  # another endpoint: ignored
    metrics.scored("canary", "7", 0.35)
    metrics.scored("canary", "5", 0.95)
    parsed = parse_metrics(generate_latest(metrics.registry).decode(), VERSIONS)
    assert parsed["stable"].requests == {"200": 9.0}
    assert parsed["canary"].requests == {"200": 2.0, "500": 1.0}
    assert parsed["canary"].latency_buckets[0.0025] == 3.0
    assert parsed["canary"].score_buckets[0.4] == 1.0 and parsed["canary"].score_buckets[0.3] == 0
    assert parsed["canary"].score_buckets[math.inf] == 1.0


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


# Prometheus text as a service writes it; {v} is the version label part of each sample.
SERVICE_TEXT = """\
# TYPE serving_requests_total counter
serving_requests_total{{endpoint="predict",variant="stable"{s},status="200"}} 90.0
serving_requests_total{{endpoint="predict",variant="canary"{c},status="200"}} 8.0
serving_requests_total{{endpoint="predict",variant="canary"{c},status="503"}} 2.0
serving_requests_total{{endpoint="predict",variant="canary"{old},status="500"}} 50.0
# TYPE serving_prediction_score histogram
serving_prediction_score_bucket{{variant="canary"{c},le="0.5"}} 7.0
serving_prediction_score_bucket{{variant="canary"{c},le="+Inf"}} 8.0
serving_prediction_score_bucket{{variant="canary"{old},le="0.5"}} 0.0
serving_prediction_score_bucket{{variant="canary"{old},le="+Inf"}} 50.0
"""


def test_only_the_judged_versions_count() -> None:
    text = SERVICE_TEXT.format(s=',version="6"', c=',version="7"', old=',version="5"')
    parsed = parse_metrics(text, VERSIONS)
    assert parsed["canary"].requests == {"200": 8.0, "503": 2.0}
    assert parsed["canary"].score_buckets == {0.5: 7.0, math.inf: 8.0}
    assert parsed["stable"].requests == {"200": 90.0}
    # The same text with the stable variant pinned to another version: it has no samples.
    assert "stable" not in parse_metrics(text, {"stable": "4", "canary": "7"})


def test_metrics_without_a_version_label_fail_closed() -> None:
    text = SERVICE_TEXT.format(s="", c="", old="")
    with pytest.raises(CanaryFailed, match="no 'version' label") as raised:
        parse_metrics(text, VERSIONS)
    assert "upgrade the model service" in raised.value.render()


@pytest.mark.parametrize("status", ["500", "503", "404", "429", "302"])
def test_any_non_2xx_answer_is_a_canary_error(status: str) -> None:
    canary = _snapshot(95)
    canary.requests[status] = 5.0
    verdict = _judge({"stable": _snapshot(900), "canary": canary}, _replay(0.85, 0.85))
    (rate,) = [c for c in verdict["checks"] if c["check"] == "canary_error_rate"]
    assert rate["value"] == pytest.approx(0.05) and not rate["passed"]


def test_requests_that_got_no_answer_fail_the_round() -> None:
    replay = _replay(0.85, 0.85)  # 200 sent, every one answered
    after = {"stable": _snapshot(900), "canary": _snapshot(100)}
    assert _judge(after, replay)["passed"]
    replay.failures = 5  # timed out or refused: the service never counted them
    verdict = _judge(after, replay)
    assert _failed(verdict) == {"client_errors"}
    (check,) = [c for c in verdict["checks"] if c["check"] == "client_errors"]
    assert (check["value"], check["limit"]) == (5, pytest.approx(2.0))
    nothing_sent = _judge(after, Replay(labels=replay.labels, scores=replay.scores))
    assert _failed(nothing_sent) == {"client_errors"}


def test_replay_counts_every_unusable_answer_as_a_client_error() -> None:
    replay = Replay()
    replay.record(
        [
            (200, "canary", 0.9, 1),
            (200, "stable", 0.2, 0),
            (0, None, None, 1),  # timed out / refused
            (500, None, None, 0),
            (200, None, 0.5, 1),  # a 200 naming no variant
            (200, "stable", None, 1),  # or no score
        ]
    )
    assert (replay.sent, replay.failures) == (6, 4)
    assert replay.accuracy("canary") == 1.0 and replay.accuracy("stable") == 1.0


def _round(passed: bool) -> dict:
    return {"passed": passed, "checks": [{"check": "score_psi", "passed": passed}]}


def test_a_run_whose_only_round_failed_does_not_pass() -> None:
    """The reported case (rounds 1, max failed rounds 2) is refused as a policy; with one
    round allowed to fail the single failed round rejects the run."""
    with pytest.raises(ValueError, match=r"max_failed_rounds .* 2 is above rounds .* 1"):
        AnalysisPolicy(rounds=1, max_failed_rounds=2)
    verdict = overall(AnalysisPolicy(rounds=1, max_failed_rounds=1), [_round(False)])
    assert verdict["passed"] is False
    assert verdict["failed_rounds"] == 1 and verdict["failed_checks"] == ["score_psi"]


def test_a_run_passes_only_after_every_round_asked_for() -> None:
    policy = AnalysisPolicy(rounds=3, max_failed_rounds=2)
    assert overall(policy, [_round(True)] * 3)["passed"] is True
    assert overall(policy, [_round(True), _round(False), _round(True)])["passed"] is True
    unfinished = overall(policy, [_round(True)] * 2)
    assert unfinished["passed"] is False
    assert (unfinished["rounds_completed"], unfinished["rounds_asked"]) == (2, 3)
    assert overall(policy, [_round(False)] * 2)["passed"] is False


def test_an_accuracy_gap_within_sampling_noise_is_not_a_rejection() -> None:
    """Each variant answers different rows: 0.77 on 90 canary rows against 0.83 on 800 stable
    rows is what two equally good models show by chance (a 10 % canary was rejected for it);
    the same gap on ten times the rows is real."""
    small = _judge(
        {"stable": _snapshot(800), "canary": _snapshot(90)}, _uneven(0.83, 800, 0.77, 90)
    )
    accuracy = next(c for c in small["checks"] if c["check"] == "canary_accuracy")
    assert accuracy["passed"], accuracy
    assert accuracy["limit"] < 0.83 - 0.05 - 0.09  # the allowance for 90 rows is about 0.10

    large = _judge(
        {"stable": _snapshot(8000), "canary": _snapshot(900)}, _uneven(0.83, 8000, 0.70, 900)
    )
    accuracy = next(c for c in large["checks"] if c["check"] == "canary_accuracy")
    assert not accuracy["passed"], accuracy


def _uneven(stable_acc: float, n_stable: int, canary_acc: float, n_canary: int) -> Replay:
    replay = Replay(sent=n_stable + n_canary)
    for variant, accuracy, n in (
        ("stable", stable_acc, n_stable),
        ("canary", canary_acc, n_canary),
    ):
        right = round(n * accuracy)
        replay.labels[variant] = [1] * n
        replay.scores[variant] = [0.9] * right + [0.1] * (n - right)
    return replay
