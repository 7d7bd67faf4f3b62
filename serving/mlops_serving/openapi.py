"""The service's OpenAPI document, generated from the model it serves.

The prediction routes read their bodies without pydantic (see :mod:`mlops_serving.codec`), so
FastAPI cannot describe them; this module does, from the stable model's feature spec: one record
with every field required, its kind, categories, nullability and hard limits, the batch form
with its size limit, the answer of the model's task, and every status code each route can
return with its body. The document is rebuilt when the stable model changes (cached per loaded
model), so ``/openapi.json`` always describes what the service accepts and answers now.
"""

from __future__ import annotations

import copy
import threading
import weakref
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from mlops_serving.model import LoadedModel
from mlops_serving.state import ServingState

_PROBABILITY = {"type": "number", "minimum": 0.0, "maximum": 1.0}
_OPTIONAL_STRING = {"type": ["string", "null"]}
_ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string", "description": "what went wrong and the fix"}},
}
_INVALID = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "array",
            "description": "one entry per invalid field (at most 20), naming it in loc",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                    "ctx": {"type": "object"},
                },
            },
        }
    },
}
_VERSIONS = {
    "type": "object",
    "required": ["stable", "canary", "canary_weight", "shadow_share"],
    "properties": {
        "stable": {**_OPTIONAL_STRING, "description": "version of the stable variant"},
        "canary": {**_OPTIONAL_STRING, "description": "version of the canary variant"},
        "canary_weight": _PROBABILITY,
        "shadow_share": {
            **_PROBABILITY,
            "description": "share of requests the canary scores in shadow, answering none",
        },
    },
}
_READY = {
    "type": "object",
    "required": ["status", *_VERSIONS["required"], "last_errors"],
    "properties": {
        "status": {"enum": ["ready", "not ready"]},
        **_VERSIONS["properties"],  # type: ignore[dict-item]
        "last_errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_MODEL_INFO = {
    "type": "object",
    "required": ["name", "version", "loaded_by", "run_id", "loaded_at", "task", "input_checks"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "loaded_by": {"type": "string"},
        "run_id": {"type": "string"},
        "loaded_at": {"type": "number"},
        "task": {"enum": ["binary", "multiclass", "regression"]},
        "input_checks": {"type": "object", "additionalProperties": {"type": "string"}},
        "aliases": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_FAILED = _json("Unexpected error (the service log has the stack)", _ref("Error"))
_TOO_LARGE = _json("Request body over SERVING_MAX_BODY_BYTES", _ref("Error"))
_NOT_READY = _json("No model loaded yet (or its load failed)", _ref("Error"))
_UNAUTHORIZED = {
    "401": _json("No bearer token", _ref("Error")),
    "403": _json("Wrong bearer token", _ref("Error")),
}
_FASTAPI_INVALID = {
    "400": _json("The body is not JSON", _ref("Error")),
    "422": _json("Invalid body", {"$ref": "#/components/schemas/HTTPValidationError"}),
}
_NOT_FOUND = _json("The ref names no version, alias or bundle; nothing changed", _ref("Error"))


def _responses(track: str, max_batch_rows: int) -> dict[tuple[str, str], dict[str, Any]]:
    """Every status code each route can return, with its body."""
    predicted = {
        "413": _TOO_LARGE,
        "422": _json("A field is missing, of the wrong kind or beyond its limits", _ref("Invalid")),
        "500": _FAILED,
        "503": _NOT_READY,
    }
    swapped = _json("The served versions after the change", _ref("Versions"))
    return {
        ("/predict", "post"): {"200": _json("The prediction", _ref("Prediction")), **predicted},
        ("/predict/batch", "post"): {
            "200": _json("One prediction per instance, in order", _ref("BatchPrediction")),
            **predicted,
            "413": _json(
                f"Body over SERVING_MAX_BODY_BYTES, or more than {max_batch_rows} instances",
                _ref("Error"),
            ),
        },
        ("/health", "get"): {
            "200": _json("Alive", {"type": "object", "properties": {"status": {"const": "alive"}}}),
            "500": _FAILED,
        },
        ("/ready", "get"): {
            "200": _json("Serving", _ref("Ready")),
            "503": _json("Not serving yet, and why", _ref("Ready")),
            "500": _FAILED,
        },
        ("/metrics", "get"): {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "500": _FAILED,
        },
        ("/model/info", "get"): {
            "200": _json(
                "The served model versions and their lineage",
                {
                    "type": "object",
                    "required": [track, "canary", "canary_weight"],
                    "properties": {
                        track: _ref("ModelInfo"),
                        "canary": {"anyOf": [_ref("ModelInfo"), {"type": "null"}]},
                        "canary_weight": _PROBABILITY,
                    },
                },
            ),
            "503": _NOT_READY,
            "500": _FAILED,
        },
        ("/model/schema", "get"): {
            "200": _json("The stable model's request fields and answer", _ref("ModelSchema")),
            "503": _NOT_READY,
            "500": _FAILED,
        },
        ("/admin/canary", "post"): {
            "200": swapped,
            **_UNAUTHORIZED,
            "404": _NOT_FOUND,
            "413": _TOO_LARGE,
            **_FASTAPI_INVALID,
            "502": _json(
                "The canary did not load (registry unreachable, a broken model); nothing changed",
                _ref("Error"),
            ),
            "500": _FAILED,
        },
        ("/admin/canary/weight", "post"): {
            "200": swapped,
            **_UNAUTHORIZED,
            "409": _json("No canary loaded", _ref("Error")),
            "413": _TOO_LARGE,
            **_FASTAPI_INVALID,
            "500": _FAILED,
        },
        ("/admin/promote", "post"): {
            "200": swapped,
            **_UNAUTHORIZED,
            "409": _json("No canary to promote", _ref("Error")),
            "500": _FAILED,
        },
        ("/admin/rollback", "post"): {"200": swapped, **_UNAUTHORIZED, "500": _FAILED},
        ("/admin/reload", "post"): {
            "200": _json(
                "The served versions after the reload",
                {
                    **_VERSIONS,
                    "required": [*_VERSIONS["required"], "reloaded", "version"],
                    "properties": {
                        **_VERSIONS["properties"],  # type: ignore[dict-item]
                        "reloaded": {"enum": ["stable", "canary"]},
                        "version": {"type": "string"},
                    },
                },
            ),
            **_UNAUTHORIZED,
            "404": _NOT_FOUND,
            "409": _json("Nothing to reload the variant from", _ref("Error")),
            "413": _TOO_LARGE,
            **_FASTAPI_INVALID,
            "502": _json("The reload failed; the previous model keeps serving", _ref("Error")),
            "500": _FAILED,
        },
    }


def _answers(model: LoadedModel | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The task's fields of one answer and of a batch answer, and what the score is."""
    if model is None:
        return {}, {}, "the model's score (no model is loaded yet: see /ready)"
    if model.task == "regression":
        value = {"type": "number", "description": "the predicted value"}
        return (
            {"value": value, "score": value},
            {"values": {"type": "array", "items": value}},
            "the predicted value",
        )
    if model.task == "multiclass":
        labels = list(model.class_labels)
        label = {"enum": labels, "description": "the predicted class"}
        probabilities = {
            "type": "object",
            "properties": dict.fromkeys(labels, _PROBABILITY),
            "required": labels,
            "additionalProperties": False,
            "description": "every class's probability (they sum to 1)",
        }
        row = {"type": "array", "items": _PROBABILITY, "minItems": len(labels)}
        row["maxItems"] = len(labels)
        row["description"] = f"class probabilities in the order {labels}"
        return (
            {"class": label, "probabilities": probabilities, "score": _PROBABILITY},
            {
                "classes": {"type": "array", "items": label},
                "probabilities": {"type": "array", "items": row},
            },
            "the probability of the predicted class",
        )
    return {"score": _PROBABILITY}, {}, "the probability of the positive class"


def _schemas(model: LoadedModel | None, max_batch_rows: int) -> dict[str, Any]:
    record: dict[str, Any] = (
        model.codec.json_schema(described=True)
        if model is not None
        else {"type": "object", "description": "no model is loaded yet: see /ready"}
    )
    one, many, score = _answers(model)
    common = {
        "variant": {"type": "string", "description": "the variant that answered"},
        "model_version": {"type": "string"},
        "request_id": {"type": "string"},
    }
    scored = {"type": "number", "description": score}
    routing = {**_OPTIONAL_STRING, "description": "routes to a variant (same id, same variant)"}
    request_id = {**_OPTIONAL_STRING, "description": "echoed; generated when absent"}
    return {
        "Error": _ERROR,
        "Invalid": _INVALID,
        "Versions": _VERSIONS,
        "Ready": _READY,
        "ModelInfo": _MODEL_INFO,
        "ModelSchema": {
            "type": "object",
            "required": ["model_version", "task", "features", "signature", "output"],
            "properties": {"model_version": {"type": "string"}, "features": {"type": "object"}},
        },
        "Features": record,
        "PredictRequest": {
            "type": "object",
            "required": ["features"],
            "properties": {
                "features": _ref("Features"),
                "entity_id": routing,
                "request_id": request_id,
            },
        },
        "BatchRequest": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "items": _ref("Features"),
                    "minItems": 1,
                    "maxItems": max_batch_rows,
                    "description": f"at most {max_batch_rows} (SERVING_MAX_BATCH_ROWS; more: 413)",
                },
                "entity_ids": {
                    "type": ["array", "null"],
                    "items": _OPTIONAL_STRING,
                    "maxItems": max_batch_rows,
                    "description": "exactly one per instance, in order (logged with the "
                    "predictions); another count is a 422",
                },
                "entity_id": routing,
                "request_id": request_id,
            },
        },
        "Prediction": {
            "type": "object",
            "required": ["score", *common, *(k for k in one if k != "score")],
            "properties": {"score": scored, **common, **one},
        },
        "BatchPrediction": {
            "type": "object",
            "required": ["scores", "rows", *common, *many],
            "properties": {
                "scores": {"type": "array", "items": scored},
                "rows": {"type": "integer", "minimum": 1},
                **common,
                **many,
            },
        },
    }


def model_document(
    base: dict[str, Any], model: LoadedModel | None, *, track: str, max_batch_rows: int
) -> dict[str, Any]:
    """``base`` (FastAPI's document of the routes) completed for ``model``."""
    document = copy.deepcopy(base)
    document["components"].setdefault("schemas", {}).update(_schemas(model, max_batch_rows))
    if model is not None:
        document["info"]["title"] = f"{model.name} model service"
        document["info"]["description"] = (
            f"{model.name} v{model.version}, a {model.task} model: the request and answer "
            "schemas below are generated from its feature spec and change with the model served."
        )
    paths = document["paths"]
    for (path, method), responses in _responses(track, max_batch_rows).items():
        operation = paths[path][method]
        operation["responses"] = responses
    for path, name in (("/predict", "PredictRequest"), ("/predict/batch", "BatchRequest")):
        paths[path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(name)}},
        }
    return document


def install(app: FastAPI, state: ServingState) -> None:
    """Serve the generated document as the app's ``/openapi.json`` (and ``/docs``)."""
    lock = threading.Lock()
    cache: dict[str, Any] = {}

    def base() -> dict[str, Any]:
        if "base" not in cache:
            cache["base"] = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
        return cache["base"]

    def openapi() -> dict[str, Any]:
        model = state.stable
        with lock:
            cached = cache.get("model")  # (weak reference to the model or None, document)
            if cached is not None:
                served = cached[0]() if cached[0] is not None else None
                if served is model and (model is None) == (cached[0] is None):
                    return cached[1]
            document = model_document(
                base(),
                model,
                track=state.settings.track,
                max_batch_rows=state.settings.max_batch_rows,
            )
            cache["model"] = (weakref.ref(model) if model is not None else None, document)
            return document

    app.openapi = openapi  # type: ignore[method-assign]
