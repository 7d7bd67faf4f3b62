"""The canary analysis' traffic: golden rows sent to ``/predict`` and what the client saw.

Each row goes with its row id as the routing key, so the canary gets its share. The answer's
prediction is the task's (interface of the service's answers): ``score`` (binary, P(positive)),
``class`` (multiclass) or ``value`` (regression). A request that ends without a usable answer (a
timeout, a refused connection, a non-2xx status, a 200 that names no variant or no prediction of
the task's kind) is a client error of the round: the analysis judges it against the error-rate
bound, it is never dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_steps.release.golden import Row

STABLE, CANARY = "stable", "canary"
REQUEST_TIMEOUT_S = 10.0
#: The answer field holding each task's prediction.
PREDICTION_FIELD = {"binary": "score", "multiclass": "class", "regression": "value"}

# status (0: no answer), variant, prediction (score, class or value), label
Answer = tuple[int, str | None, Any, Any]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Replay:
    """Per variant, the labels and predictions of the answered rows so far; this round's
    requests sent and those that got no usable answer. ``scores`` holds binary scores and
    regression values, ``classes`` the answered classes of a multiclass model."""

    labels: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    classes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    sent: int = 0
    failures: int = 0
    task: str = "binary"

    def rows(self, variant: str) -> int:
        return len(self.labels.get(variant, []))

    def accuracy(self, variant: str) -> float:
        """Binary: the score at 0.5 against 0/1 labels; multiclass: the answered class."""
        labels = self.labels.get(variant, [])
        if not labels:
            return math.nan
        if self.task == "multiclass":
            answered = self.classes.get(variant, [])
            return float(np.mean([str(a) == str(b) for a, b in zip(answered, labels, strict=True)]))
        predicted = np.asarray(self.scores.get(variant, [])) >= 0.5
        return float(np.mean(predicted == np.asarray(labels, dtype=bool)))

    def errors(self, variant: str) -> np.ndarray:
        """Regression: answered value minus label, per row."""
        values = np.asarray(self.scores.get(variant, []), dtype=float)
        return values - np.asarray(self.labels.get(variant, []), dtype=float)

    def quality(self, variant: str, metric: str) -> float:
        """``accuracy``, ``rmse`` or ``mae`` of the variant's answers (NaN without rows)."""
        if metric == "accuracy":
            return self.accuracy(variant)
        errors = self.errors(variant)
        if not len(errors):
            return math.nan
        if metric == "mae":
            return float(np.mean(np.abs(errors)))
        return math.sqrt(float(np.mean(errors**2)))

    def summary(self, variant: str) -> dict[str, float]:
        """What analysis.json records per variant about its answers."""
        if self.task == "regression":
            return {
                "rows": self.rows(variant),
                "rmse": self.quality(variant, "rmse"),
                "mae": self.quality(variant, "mae"),
            }
        return {"accuracy": self.accuracy(variant)}

    def record(self, answers: Iterable[Answer]) -> None:
        for status, variant, prediction, label in answers:
            self.sent += 1
            usable = 200 <= status < 300 and variant in (STABLE, CANARY)
            if self.task == "multiclass":
                usable = usable and isinstance(prediction, str)
            else:
                usable = usable and _number(prediction)
            if not usable or variant is None:
                self.failures += 1
                continue
            self.labels[variant].append(label)
            if self.task == "multiclass":
                self.classes[variant].append(prediction)
            else:
                self.scores[variant].append(float(prediction))


def _send(session: Any, url: str, rows: Iterable[Row], tag: str, answer_field: str) -> list[Answer]:
    out: list[Answer] = []
    for index, (entity, features, label) in enumerate(rows):
        body = {"features": features, "entity_id": entity, "request_id": f"{tag}-{index}"}
        try:
            response = session.post(url, json=body, timeout=REQUEST_TIMEOUT_S)
            payload = response.json() if 200 <= response.status_code < 300 else {}
        except Exception:  # timed out, refused, reset, or a 2xx body that is not JSON
            out.append((0, None, None, label))
            continue
        if not isinstance(payload, dict):
            payload = {}
        out.append((response.status_code, payload.get("variant"), payload.get(answer_field), label))
    return out


def replay_round(
    session: Any, url: str, sample: list[Row], *, concurrency: int, tag: str, replay: Replay
) -> None:
    """Send ``sample`` over ``concurrency`` connections; this round's counts start at zero."""
    replay.sent = replay.failures = 0
    shards = [sample[i::concurrency] for i in range(concurrency)]
    answer_field = PREDICTION_FIELD[replay.task]
    with ThreadPoolExecutor(concurrency) as pool:
        results = pool.map(
            _send,
            [session] * len(shards),
            [url] * len(shards),
            shards,
            [f"{tag}-{i}" for i in range(len(shards))],
            [answer_field] * len(shards),
        )
        replay.record(answer for batch in results for answer in batch)
