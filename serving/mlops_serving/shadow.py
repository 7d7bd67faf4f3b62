"""Shadow mode: the canary scores a copy of a share of the requests the stable model answers.

What Istio's traffic mirroring does for Flagger, inside one process: while the canary is loaded at
weight 0 with a ``shadow_share``, that share of the requests the stable model answered are scored
by the canary too. The copy is scored *after* the answer went out (a Starlette background task,
``async`` so it runs on the event loop, the only thread that writes the request counters): the
user never waits for the candidate and never sees its answer. The copy's predictions go to the
prediction log as variant ``shadow`` under the request's id (monitoring and training skip them:
nobody was served them), it is counted under the variant ``shadow`` (requests by status, its own
scoring latency, scores or classes), and each row is compared with the stable answer to the same
request: ``serving_shadow_agreement_total{outcome="agree"|"disagree"}``. Agreement: the same side
of 0.5 (binary), the same class (multiclass), within 10 % of the stable value (regression).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops_serving.codec import InvalidInput
from mlops_serving.model import LoadedModel
from mlops_serving.predlog import RequestBody

log = logging.getLogger("mlops_serving")
SHADOW = "shadow"
REGRESSION_AGREEMENT = 0.1  # a regressor's copy agrees within this share of the stable value


def shadow_for(state: Any) -> LoadedModel | None:
    """The canary, for a sampled ``shadow_share`` of the requests; None otherwise."""
    canary, share = state.canary, state.shadow_share
    if canary is None or share <= 0.0:
        return None
    if share < 1.0 and random.random() >= share:  # noqa: S311 (sampling, not security)
        return None
    return canary


def agreements(
    task: str,
    stable_scores: np.ndarray,
    copy_scores: np.ndarray,
    stable_classes: Sequence[str] | None,
    copy_classes: Sequence[str] | None,
) -> int:
    """How many of the copy's rows agree with the stable answers."""
    if task == "multiclass":
        return sum(a == b for a, b in zip(stable_classes or (), copy_classes or (), strict=True))
    if task == "regression":
        allowed = REGRESSION_AGREEMENT * np.maximum(np.abs(stable_scores), 1e-12)
        return int(np.count_nonzero(np.abs(copy_scores - stable_scores) <= allowed))
    return int(np.count_nonzero((stable_scores >= 0.5) == (copy_scores >= 0.5)))


async def score_copy(
    state: Any,
    model: LoadedModel,
    *,
    endpoint: str,
    request_id: str,
    entity_ids: Sequence[str | None],
    body: RequestBody,
    stable_scores: Sequence[float] | np.ndarray,
    stable_classes: Sequence[str] | None,
) -> None:
    """Score the request's records with ``model`` as the shadow, log and count them; a copy
    that fails is counted under its status and logged, and never reaches the user."""
    started = time.perf_counter()
    metrics, version = state.metrics, model.version
    try:
        matrix, _ = model.codec.encode_many(body.records(), ["body", body.field])
        outputs = model.predict(matrix)
        classes: list[str] | None = None
        if model.task == "multiclass":
            best = outputs.argmax(axis=1)
            classes = [model.class_labels[i] for i in best.tolist()]
            scores = outputs[np.arange(len(best)), best]
            counts: dict[str, int] = {}
            for label in classes:
                counts[label] = counts.get(label, 0) + 1
            metrics.classified(SHADOW, version, counts)
        else:
            scores = outputs
        metrics.scored(SHADOW, version, scores, model.score_buckets)
        agreed = agreements(
            model.task, np.asarray(stable_scores, float), scores, stable_classes, classes
        )
        metrics.shadow_compared(version, agreed=agreed, disagreed=len(scores) - agreed)
        state.predictions.record(
            request_id=request_id,
            entity_ids=entity_ids,
            variant=SHADOW,
            version=version,
            features=body,
            scores=scores,
            timestamp=time.time(),
            classes=classes,
        )
    except InvalidInput:  # the candidate's feature spec refuses what the stable one took
        metrics.request(endpoint, SHADOW, version, 422, time.perf_counter() - started)
    except Exception:
        log.exception("shadow scoring failed (request %s, version %s)", request_id, version)
        metrics.request(endpoint, SHADOW, version, 500, time.perf_counter() - started)
    else:
        metrics.request(endpoint, SHADOW, version, 200, time.perf_counter() - started)
