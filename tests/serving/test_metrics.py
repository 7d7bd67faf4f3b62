"""The service's request metrics: plain counters on the request path, Prometheus families at
scrape time, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_serving.metrics import LATENCY_BUCKETS, SCORE_BUCKETS, ServingMetrics


def _samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_batch_observes_the_same_histogram_as_its_rows_one_by_one() -> None:
    scores = np.random.default_rng(0).random(1_000)
    scores[:5] = [0.0, 0.1, 0.5, 1.0, 0.30000000000000004]  # bounds and values next to them
    batch, single = ServingMetrics(), ServingMetrics()
    batch.scored("stable", "3", scores)
    for score in scores:
        single.scored("stable", "3", float(score))
    assert _samples(batch).keys() == _samples(single).keys()
    for key, value in _samples(single).items():
        assert np.isclose(_samples(batch)[key], value), key
    labels = (("variant", "stable"), ("version", "3"))
    assert _samples(batch)[("serving_predicted_rows_total", labels)] == 1_000
    le_half = (("le", "0.5"), *labels)
    assert _samples(batch)[("serving_prediction_score_bucket", le_half)] == np.sum(scores <= 0.5)
    assert len(SCORE_BUCKETS) == 10


def test_requests_count_by_status_and_latency_buckets_are_cumulative() -> None:
    metrics = ServingMetrics()
    for status, seconds in ((200, 0.0004), (200, 0.001), (422, 0.003), (200, 9.0)):
        metrics.request("predict", "canary", "7", status, seconds)
    samples = _samples(metrics)
    series = (("endpoint", "predict"), ("variant", "canary"), ("version", "7"))
    assert samples[("serving_requests_total", (series[0], ("status", "200"), *series[1:]))] == 3
    assert samples[("serving_requests_total", (series[0], ("status", "422"), *series[1:]))] == 1

    def bucket(le: str) -> float:
        return samples[("serving_request_latency_seconds_bucket", (series[0], ("le", le),
                                                                   *series[1:]))]  # fmt: skip

    assert [bucket(le) for le in ("0.0005", "0.001", "0.0025", "0.005", "2.5", "+Inf")] == [
        1, 2, 2, 3, 3, 4
    ]  # fmt: skip
    assert samples[("serving_request_latency_seconds_count", series)] == 4
    assert np.isclose(samples[("serving_request_latency_seconds_sum", series)], 9.0044)
    assert len(LATENCY_BUCKETS) == 12


def test_values_outside_the_training_range_are_counted_per_feature_variant_and_version() -> None:
    metrics = ServingMetrics()
    metrics.out_of_range("stable", "3", ("tenure_months",))
    metrics.out_of_range("stable", "3", ["tenure_months", "avg_monthly_gb", "tenure_months"])
    metrics.out_of_range("canary", "4", ["tenure_months"])
    samples = _samples(metrics)

    def count(feature: str, variant: str, version: str) -> float:
        labels = (("feature", feature), ("variant", variant), ("version", version))
        return samples[("serving_out_of_range_total", labels)]

    assert count("tenure_months", "stable", "3") == 3
    assert count("avg_monthly_gb", "stable", "3") == 1
    assert count("tenure_months", "canary", "4") == 1
