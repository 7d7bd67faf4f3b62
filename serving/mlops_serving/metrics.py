"""Prometheus metrics of the service, in a registry of its own (one per app instance)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


@dataclass
class ServingMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "serving_requests",
            "Prediction requests by endpoint, variant, model version and HTTP status.",
            ["endpoint", "variant", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "serving_request_latency_seconds",
            "Time spent handling a prediction request inside the service.",
            ["endpoint", "variant", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "serving_predicted_rows", "Rows scored.", ["variant", "version"], registry=r
        )
        self.scores = Histogram(
            "serving_prediction_score",
            "Distribution of predicted churn probabilities.",
            ["variant", "version"],
            buckets=_SCORE_BUCKETS,
            registry=r,
        )
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
            "Predictions not logged because the log writer fell behind.",
            registry=r,
        )
