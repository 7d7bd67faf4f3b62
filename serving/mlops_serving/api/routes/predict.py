"""``/predict`` and ``/predict/batch``: the service's measured hot path.

The endpoints read the body with orjson and validate it against the served model's own feature
spec (see :mod:`mlops_serving.codec`) instead of a pydantic model: the input schema belongs to the
model version, which changes at run time, and the hot path stays a few dozen microseconds. For the
same reason they take only the request (no ``Depends`` to resolve), answer with orjson, bump plain
counters on the event loop (:mod:`mlops_serving.metrics`) and hand the prediction log the body as
it arrived. The OpenAPI request bodies are declared by hand below.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlops_serving.api.deps import serving_state
from mlops_serving.codec import InvalidInput
from mlops_serving.metrics import ServingMetrics
from mlops_serving.model import LoadedModel
from mlops_serving.predlog import RequestBody
from mlops_serving.state import STABLE, ServingState

router = APIRouter(tags=["predict"])

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["features"],
                    "properties": {
                        "features": {
                            "type": "object",
                            "description": "Model inputs; see GET /model/schema for the fields.",
                        },
                        "entity_id": {"type": "string", "description": "Sticky canary routing"},
                        "request_id": {"type": "string"},
                    },
                }
            }
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {
                        "instances": {"type": "array", "items": {"type": "object"}},
                        "entity_ids": {"type": "array", "items": {"type": "string"}},
                        "entity_id": {"type": "string", "description": "Routes the batch"},
                        "request_id": {"type": "string"},
                    },
                }
            }
        },
    }
}


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
    )
    seconds = time.perf_counter() - started
    state.metrics.request(endpoint, variant, model.version, 200, seconds)
    return request_id


def _not_ready(state: ServingState, endpoint: str, started: float) -> Response:
    _finish(state.metrics, endpoint, started, 503)
    reason = state.last_errors.get(STABLE, "the model is still loading")
    return _json({"detail": f"no model loaded: {reason}"}, 503)


@router.post("/predict", openapi_extra=_PREDICT_BODY)
async def predict(request: Request) -> Response:
    """Score one customer."""
    started = time.perf_counter()
    state = serving_state(request)
    metrics = state.metrics
    received = await _payload(request, metrics, "predict", started)
    if isinstance(received, Response):
        return received
    body, payload = received
    entity_id = payload.get("entity_id")
    if entity_id is not None and type(entity_id) is not str:
        return _reject(
            metrics,
            "predict",
            started,
            loc=["body", "entity_id"],
            msg="Expected a string",
            kind="string_type",
        )
    variant, model = state.route(entity_id)
    if model is None:
        return _not_ready(state, "predict", started)
    features = payload.get("features")
    try:
        values = model.codec.encode_one(features, ["body", "features"])
    except InvalidInput as exc:
        _finish(metrics, "predict", started, 422, variant=variant, version=model.version)
        return _invalid(exc.errors)
    score = model.predict_one(values)
    metrics.scored(variant, model.version, score)
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
    )
    return _json(
        {
            "score": score,
            "variant": variant,
            "model_version": model.version,
            "request_id": request_id,
        }
    )


@router.post("/predict/batch", openapi_extra=_BATCH_BODY)
async def predict_batch(request: Request) -> Response:  # noqa: PLR0911 (a return per rejection)
    """Score many customers in one request (one variant answers the whole batch)."""
    started = time.perf_counter()
    state = serving_state(request)
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
        type(entity_ids) is not list or len(entity_ids) != len(instances)
    ):
        return _reject(
            metrics,
            "batch",
            started,
            loc=["body", "entity_ids"],
            msg="Expected one entity id per instance",
            kind="list_type",
        )
    routing_key = payload.get("entity_id")
    variant, model = state.route(routing_key if type(routing_key) is str else None)
    if model is None:
        return _not_ready(state, "batch", started)
    try:
        matrix = model.codec.encode_many(instances, ["body", "instances"])
    except InvalidInput as exc:
        _finish(metrics, "batch", started, 422, variant=variant, version=model.version)
        return _invalid(exc.errors)
    scores = model.predict(matrix)
    metrics.scored(variant, model.version, scores)
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
    )
    return _json(
        {
            "scores": scores,
            "rows": len(scores),
            "variant": variant,
            "model_version": model.version,
            "request_id": request_id,
        }
    )
