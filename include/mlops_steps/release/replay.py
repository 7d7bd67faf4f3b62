"""The canary analysis' traffic: golden rows sent to ``/predict`` and what the client saw.

Each row goes with its customer id as the routing key, so the canary gets its share. A request
that ends without a usable answer (a timeout, a refused connection, a non-2xx status, a 200 that
names no variant or score) is a client error of the round: the analysis judges it against the
error-rate bound, it is never dropped.
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

Answer = tuple[int, str | None, float | None, int]  # status (0: no answer), variant, score, label


@dataclass
class Replay:
    """Per variant, labels and scores of the answered rows so far; this round's requests sent
    and those that got no usable answer."""

    labels: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    sent: int = 0
    failures: int = 0

    def accuracy(self, variant: str) -> float:
        labels, scores = self.labels.get(variant, []), self.scores.get(variant, [])
        if not labels:
            return math.nan
        predicted = np.asarray(scores) >= 0.5
        return float(np.mean(predicted == np.asarray(labels, dtype=bool)))

    def record(self, answers: Iterable[Answer]) -> None:
        for status, variant, score, label in answers:
            self.sent += 1
            if 200 <= status < 300 and variant in (STABLE, CANARY) and score is not None:
                self.labels[variant].append(label)
                self.scores[variant].append(float(score))
            else:
                self.failures += 1


def _send(session: Any, url: str, rows: Iterable[Row], tag: str) -> list[Answer]:
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
        out.append((response.status_code, payload.get("variant"), payload.get("score"), label))
    return out


def replay_round(
    session: Any, url: str, sample: list[Row], *, concurrency: int, tag: str, replay: Replay
) -> None:
    """Send ``sample`` over ``concurrency`` connections; this round's counts start at zero."""
    replay.sent = replay.failures = 0
    shards = [sample[i::concurrency] for i in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        results = pool.map(
            _send,
            [session] * len(shards),
            [url] * len(shards),
            shards,
            [f"{tag}-{i}" for i in range(len(shards))],
        )
        replay.record(answer for batch in results for answer in batch)
