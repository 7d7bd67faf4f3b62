"""Prometheus metrics of the service, in a registry of its own (one per app instance).

The per-request series (requests, latency, rows, scores) are plain counters that the request
path bumps and a collector turns into Prometheus families at scrape time: prometheus_client's
``labels(...).observe(...)`` takes a lock, validates labels and walks the buckets in Python,
which cost ~13 µs a request, as much as the rest of the service's own work on a 1-row prediction.
They are written only from the event loop's thread (the prediction endpoints are ``async``);
a scrape reads a snapshot. Rare events (load failures, canary weight, model info, dropped log
rows) use prometheus_client's own metrics.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class _Histogram:
    """Per-bucket (not cumulative) counts; the last slot is +Inf."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # value <= le
        self.total += value

    def observe_many(self, values: np.ndarray) -> None:
        slots = np.searchsorted(self.bounds, values, side="left")
        for slot, count in enumerate(np.bincount(slots, minlength=len(self.counts)).tolist()):
            if count:
                self.counts[slot] += count
        self.total += float(values.sum())

    def family_sample(self) -> tuple[list[tuple[str, float]], float]:
        counts, total = list(self.counts), self.total
        cumulative, buckets = 0, list[tuple[str, float]]()
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return buckets, total


class _RequestSeries:
    """One (endpoint, variant, version): requests by status and their latency."""

    __slots__ = ("latency", "statuses")

    def __init__(self) -> None:
        self.statuses: dict[str, int] = {}
        self.latency = _Histogram(LATENCY_BUCKETS)


class _ScoreSeries:
    """One (variant, version): rows scored and the distribution of their scores."""

    __slots__ = ("rows", "scores")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.rows = 0
        self.scores = _Histogram(buckets)


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._requests: dict[tuple[str, str, str], _RequestSeries] = {}
        self._scored: dict[tuple[str, str], _ScoreSeries] = {}
        self._out_of_range: dict[tuple[str, str, str], int] = {}
        self._classes: dict[tuple[str, str, str], int] = {}
        self._shadow: dict[tuple[str, str], int] = {}  # (version, outcome) -> rows
        self.registry.register(_RequestCollector(self))
        r = self.registry
        self.load_failures = Counter(
            "serving_model_load_failures",
            "Model loads (start-up, reload, canary) that failed; the old model kept serving.",
            ["variant"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "serving_canary_weight", "Share of traffic routed to the canary variant.", registry=r
        )
        self.model_info = Gauge(
            "serving_model_info",
            "The model version each variant serves (value 1).",
            ["variant", "version", "run_id"],
            registry=r,
        )
        self.log_dropped = Counter(
            "serving_prediction_log_dropped_rows",
            "Predictions not logged because the log writer fell behind or failed.",
            registry=r,
        )

    def request(
        self, endpoint: str, variant: str, version: str, status: int, seconds: float
    ) -> None:
        """Count one handled prediction request (any status) and its latency."""
        key = (endpoint, variant, version)
        series = self._requests.get(key)
        if series is None:
            series = self._requests.setdefault(key, _RequestSeries())
        code = str(status)
        series.statuses[code] = series.statuses.get(code, 0) + 1
        series.latency.observe(seconds)

    def scored(
        self,
        variant: str,
        version: str,
        scores: float | np.ndarray,
        buckets: tuple[float, ...] = SCORE_BUCKETS,
    ) -> None:
        """Count rows scored by a variant and observe their scores (``buckets``: the model's,
        taken when its series is first seen)."""
        key = (variant, version)
        series = self._scored.get(key)
        if series is None:
            series = self._scored.setdefault(key, _ScoreSeries(buckets))
        if isinstance(scores, np.ndarray):
            series.rows += len(scores)
            series.scores.observe_many(scores)
        else:
            series.rows += 1
            series.scores.observe(scores)

    def classified(self, variant: str, version: str, counts: dict[str, int]) -> None:
        """Count a multiclass model's predicted classes (``counts``: rows by class label)."""
        for label, count in counts.items():
            key = (variant, version, label)
            self._classes[key] = self._classes.get(key, 0) + count

    def shadow_compared(self, version: str, *, agreed: int, disagreed: int) -> None:
        """Count a shadow copy's rows that agreed / disagreed with the stable answers."""
        for outcome, count in (("agree", agreed), ("disagree", disagreed)):
            key = (version, outcome)
            self._shadow[key] = self._shadow.get(key, 0) + count

    def out_of_range(self, variant: str, version: str, features: Iterable[str]) -> None:
        """Count served values outside the training range, one per feature name given."""
        for feature in features:
            key = (feature, variant, version)
            self._out_of_range[key] = self._out_of_range.get(key, 0) + 1

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "serving_requests",
            "Prediction requests by endpoint, variant, model version and HTTP status.",
            labels=["endpoint", "variant", "version", "status"],
        )
        latency = HistogramMetricFamily(
            "serving_request_latency_seconds",
            "Time spent handling a prediction request inside the service.",
            labels=["endpoint", "variant", "version"],
        )
        for key, request_series in list(self._requests.items()):
            for status, count in list(request_series.statuses.items()):
                requests.add_metric([*key, status], count)
            buckets, total = request_series.latency.family_sample()
            latency.add_metric(list(key), buckets, total)
        rows = CounterMetricFamily(
            "serving_predicted_rows", "Rows scored.", labels=["variant", "version"]
        )
        scores = HistogramMetricFamily(
            "serving_prediction_score",
            "Distribution of predicted scores: binary P(positive class), multiclass the "
            "predicted class's probability, regression the predicted value.",
            labels=["variant", "version"],
        )
        for variant_version, score_series in list(self._scored.items()):
            rows.add_metric(list(variant_version), score_series.rows)
            buckets, total = score_series.scores.family_sample()
            scores.add_metric(list(variant_version), buckets, total)
        out_of_range = CounterMetricFamily(
            "serving_out_of_range",
            "Served values outside the range the model saw in training, by feature (within the "
            "data contract's limits: values beyond those get 422 and are not served).",
            labels=["feature", "variant", "version"],
        )
        for key, count in list(self._out_of_range.items()):
            out_of_range.add_metric(list(key), count)
        classes = CounterMetricFamily(
            "serving_predicted_class",
            "Rows a multiclass model predicted each class for.",
            labels=["variant", "version", "class"],
        )
        for key, count in list(self._classes.items()):
            classes.add_metric(list(key), count)
        shadow = CounterMetricFamily(
            "serving_shadow_agreement",
            "Rows the shadow variant scored, by whether its answer agreed with the stable "
            "answer to the same request.",
            labels=["variant", "version", "outcome"],
        )
        for (version, outcome), count in list(self._shadow.items()):
            shadow.add_metric(["shadow", version, outcome], count)
        yield from (requests, latency, rows, scores, out_of_range, classes, shadow)


class _RequestCollector(Collector):
    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families()

    def describe(self) -> list[Any]:
        return []  # families are created at scrape time; nothing to pre-register
