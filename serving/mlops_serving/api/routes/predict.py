"""``/predict`` and ``/predict/batch``: the service's measured hot path.

The endpoints read the body with orjson and validate it against the served model's own feature
spec (see :mod:`mlops_serving.codec`) instead of a pydantic model: the input schema belongs to the
model version, which changes at run time, and the hot path stays a few dozen microseconds. For the
same reason they take only the request (no ``Depends`` to resolve), answer with orjson, bump plain
counters on the event loop (:mod:`mlops_serving.metrics`) and hand the prediction log the body as
it arrived. Their OpenAPI document is generated from the served model's spec
(:mod:`mlops_serving.openapi`).

The answer follows the model's task: binary the positive class's probability as ``score``;
multiclass the predicted ``class``, every class's probability and that class's probability as
``score``; regression the ``value`` (also the ``score``).

Values outside the model's training range are served, counted per feature and flagged in the
prediction log; values beyond the data contract's limits are 422s (both from the codec). An
unexpected error is a JSON 500 without the stack, counted like any answer under the variant and
version that was chosen (:func:`_failed`): the canary analysis reads those counts.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from mlops_serving.api.deps import serving_state
from mlops_serving.body_limit import BodyTooLarge
from mlops_serving.codec import InvalidInput
from mlops_serving.metrics import ServingMetrics
from mlops_serving.model import LoadedModel
from mlops_serving.predlog import RequestBody
from mlops_serving.shadow import score_copy, shadow_for
from mlops_serving.state import STABLE, ServingState

router = APIRouter(tags=["predict"])
log = logging.getLogger("mlops_serving")


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def _invalid(errors: list[dict[str, Any]]) -> Response:
    return _json({"detail": errors}, 422)


def _finish(
    metrics: ServingMetrics,
    endpoint: str,
    started: float,
    status: int,
    *,
    variant: str = "none",
    version: str = "none",
) -> None:
    """Count a request and its latency; variant and version are "none" if none was chosen."""
    metrics.request(endpoint, variant, version, status, time.perf_counter() - started)


def _string_errors(payload: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    """422 errors for optional string fields holding something else (null is absent)."""
    return [
        {"loc": ["body", key], "msg": "Input should be a valid string", "type": "string_type"}
        for key in keys
        if payload.get(key) is not None and type(payload[key]) is not str
    ]


async def _payload(
    request: Request, metrics: ServingMetrics, endpoint: str, started: float
) -> tuple[bytes, dict[str, Any]] | Response:
    """The body and the JSON object in it, or the 422 to answer (already counted)."""
    body = await request.body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _reject(
            metrics, endpoint, started, loc=["body"], msg=f"Invalid JSON: {exc}", kind="json"
        )
    if type(payload) is not dict:
        return _reject(
            metrics, endpoint, started, loc=["body"], msg="Expected a JSON object", kind="dict"
        )
    errors = _string_errors(payload, "entity_id", "request_id")
    if errors:
        _finish(metrics, endpoint, started, 422)
        return _invalid(errors)
    return body, payload


def _reject(
    metrics: ServingMetrics, endpoint: str, started: float, *, loc: list[Any], msg: str, kind: str
) -> Response:
    """A 422 for a body of the wrong shape, counted before a variant was chosen."""
    _finish(metrics, endpoint, started, 422)
    return _invalid([{"loc": loc, "msg": msg, "type": kind}])


def _served(
    state: ServingState,
    endpoint: str,
    started: float,
    *,
    variant: str,
    model: LoadedModel,
    payload: dict[str, Any],
    entity_ids: Any,
    features: RequestBody,
    scores: Any,
    out_of_range: dict[int, Any] | None,
    classes: Any = None,
) -> str:
    """Log and count a successful prediction; returns its request id. The log gets the
    body as it arrived (the writer decodes it again, in its own process)."""
    request_id = str(payload.get("request_id") or uuid.uuid4().hex)
    state.predictions.record(
        request_id=request_id,
        entity_ids=entity_ids,
        variant=variant,
        version=model.version,
        features=features,
        scores=scores,
        timestamp=time.time(),
        out_of_range=out_of_range,
        classes=classes,
    )
    seconds = time.perf_counter() - started
    state.metrics.request(endpoint, variant, model.version, 200, seconds)
    return request_id


def _with_shadow(
    response: Response,
    state: ServingState,
    model: LoadedModel,
    endpoint: str,
    **copy: Any,
) -> Response:
    """The answer, and -- for a sampled shadow share of what the stable model answered -- the
    canary scoring a copy once it has been sent (mlops_serving/shadow.py)."""
    if model is not state.stable:
        return response
    shadow = shadow_for(state)
    if shadow is not None:
        response.background = BackgroundTask(score_copy, state, shadow, endpoint=endpoint, **copy)
    return response


def _not_ready(state: ServingState, endpoint: str, started: float) -> Response:
    _finish(state.metrics, endpoint, started, 503)
    reason = state.last_errors.get(STABLE, "the model is still loading")
    return _json({"detail": f"no model loaded: {reason}"}, 503)


def _failed(
    state: ServingState, endpoint: str, started: float, variant: str, version: str
) -> Response:
    """A 500 for an unexpected error: counted under the variant and version that was chosen
    (the canary analysis reads these), logged with its stack, answered without it."""
    _finish(state.metrics, endpoint, started, 500, variant=variant, version=version)
    error_id = uuid.uuid4().hex
    log.exception("%s failed (error id %s, variant %s, version %s)", endpoint, error_id,
                  variant, version)  # fmt: skip
    return _json({"detail": f"internal error (error id {error_id}; see the service log)"}, 500)


@router.post("/predict")
async def predict(request: Request) -> Response:
    """Predict for one record."""
    started = time.perf_counter()
    state = serving_state(request)
    variant = version = "none"
    try:
        metrics = state.metrics
        received = await _payload(request, metrics, "predict", started)
        if isinstance(received, Response):
            return received
        body, payload = received
        entity_id = payload.get("entity_id")
        variant, model = state.route(entity_id)
        if model is None:
            return _not_ready(state, "predict", started)
        version = model.version
        features = payload.get("features")
        try:
            values, outside = model.codec.encode_one(features, ["body", "features"])
        except InvalidInput as exc:
            _finish(metrics, "predict", started, 422, variant=variant, version=version)
            return _invalid(exc.errors)
        answer: dict[str, Any]
        classes = None
        if model.task == "multiclass":
            probabilities = model.predict_proba_one(values)
            best = max(range(len(probabilities)), key=probabilities.__getitem__)
            score, label = probabilities[best], model.class_labels[best]
            classes = (label,)
            by_class = dict(zip(model.class_labels, probabilities, strict=True))
            answer = {"class": label, "probabilities": by_class}
            metrics.classified(variant, version, {label: 1})
        else:
            score = model.predict_one(values)
            answer = {"value": score} if model.task == "regression" else {}
        metrics.scored(variant, version, score, model.score_buckets)
        if outside:
            metrics.out_of_range(variant, version, outside)
        request_id = _served(
            state,
            "predict",
            started,
            variant=variant,
            model=model,
            payload=payload,
            entity_ids=(entity_id,),
            features=RequestBody(body, "features"),
            scores=(score,),
            out_of_range={0: outside} if outside else None,
            classes=classes,
        )
        response = _json(
            {
                "score": score,
                "variant": variant,
                "model_version": version,
                "request_id": request_id,
                **answer,
            }
        )
        return _with_shadow(
            response,
            state,
            model,
            "predict",
            request_id=request_id,
            entity_ids=(entity_id,),
            body=RequestBody(body, "features"),
            stable_scores=(score,),
            stable_classes=classes,
        )
    except (BodyTooLarge, ClientDisconnect):
        raise  # answered by the body limit / nobody to answer
    except Exception:
        return _failed(state, "predict", started, variant, version)


@router.post("/predict/batch")
async def predict_batch(request: Request) -> Response:
    """Predict for many records in one request (one variant answers the whole batch)."""
    started = time.perf_counter()
    state = serving_state(request)
    chosen = ["none", "none"]  # variant, version: filled in once a model is chosen
    try:
        return await _predict_batch(request, state, started, chosen)
    except (BodyTooLarge, ClientDisconnect):
        raise  # answered by the body limit / nobody to answer
    except Exception:
        return _failed(state, "batch", started, *chosen)


async def _predict_batch(  # noqa: PLR0911 (a return per rejection)
    request: Request, state: ServingState, started: float, chosen: list[str]
) -> Response:
    metrics = state.metrics
    received = await _payload(request, metrics, "batch", started)
    if isinstance(received, Response):
        return received
    body, payload = received
    instances = payload.get("instances")
    if type(instances) is not list or not instances:
        return _reject(
            metrics,
            "batch",
            started,
            loc=["body", "instances"],
            msg="Expected a non-empty list",
            kind="list_type",
        )
    limit = state.settings.max_batch_rows
    if len(instances) > limit:
        _finish(metrics, "batch", started, 413)
        return _json(
            {
                "detail": f"batch of {len(instances)} rows exceeds the limit of "
                f"{limit} (SERVING_MAX_BATCH_ROWS); split the request"
            },
            413,
        )
    entity_ids = payload.get("entity_ids")
    if entity_ids is not None and (
        type(entity_ids) is not list
        or len(entity_ids) != len(instances)
        or not all(e is None or type(e) is str for e in entity_ids)
    ):
        return _reject(
            metrics,
            "batch",
            started,
            loc=["body", "entity_ids"],
            msg="Expected one entity id (a string or null) per instance",
            kind="list_type",
        )
    variant, model = state.route(payload.get("entity_id"))
    if model is None:
        return _not_ready(state, "batch", started)
    chosen[:] = variant, model.version
    try:
        matrix, outside = model.codec.encode_many(instances, ["body", "instances"])
    except InvalidInput as exc:
        _finish(metrics, "batch", started, 422, variant=variant, version=model.version)
        return _invalid(exc.errors)
    scores, answer, classes = _batch_answer(metrics, variant, model, model.predict(matrix))
    metrics.scored(variant, model.version, scores, model.score_buckets)
    if outside:
        metrics.out_of_range(variant, model.version, itertools.chain(*outside.values()))
    request_id = _served(
        state,
        "batch",
        started,
        variant=variant,
        model=model,
        payload=payload,
        entity_ids=entity_ids or (),
        features=RequestBody(body, "instances"),
        scores=scores,
        out_of_range=outside or None,
        classes=classes,
    )
    response = _json(
        {
            "scores": scores,
            "rows": len(scores),
            "variant": variant,
            "model_version": model.version,
            "request_id": request_id,
            **answer,
        }
    )
    return _with_shadow(
        response,
        state,
        model,
        "batch",
        request_id=request_id,
        entity_ids=entity_ids or (),
        body=RequestBody(body, "instances"),
        stable_scores=scores,
        stable_classes=classes,
    )


def _batch_answer(
    metrics: ServingMetrics, variant: str, model: LoadedModel, outputs: np.ndarray
) -> tuple[np.ndarray, dict[str, Any], list[str] | None]:
    """The scores, the task's fields of the answer and a multiclass model's predicted
    classes (counted here), from the booster's outputs."""
    if model.task == "multiclass":
        best = outputs.argmax(axis=1)
        labels = model.class_labels
        counts = np.bincount(best, minlength=len(labels)).tolist()
        metrics.classified(
            variant, model.version, {labels[i]: n for i, n in enumerate(counts) if n}
        )
        classes = [labels[i] for i in best.tolist()]
        scores = outputs[np.arange(len(best)), best]
        return scores, {"classes": classes, "probabilities": outputs}, classes
    if model.task == "regression":
        return outputs, {"values": outputs}, None
    return outputs, {}, None
