"""``/model/*``: what the service serves and the request fields it expects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mlops_serving.aliases import by_version
from mlops_serving.api.deps import serving_state
from mlops_serving.model import LoadedModel
from mlops_serving.state import CANARY

router = APIRouter(prefix="/model", tags=["model"])


@router.get("/info")
def model_info(request: Request) -> JSONResponse:
    """Name, version, aliases, run id, data hash, code sha, training time and input checks per
    variant. The aliases are the registry's now (read when asked, cached a few seconds); if the
    registry cannot be read, ``aliases`` is null and ``aliases_error`` says why."""
    state = serving_state(request)
    if state.stable is None:
        return JSONResponse({"detail": "no model loaded"}, status_code=503)
    aliases: dict[str, str] | None = None
    error: str | None = "this service has no model registry to read aliases from"
    if state.aliases is not None:
        aliases, error = state.aliases.current()

    def described(model: LoadedModel) -> dict[str, Any]:
        info = model.info()
        info["aliases"] = by_version(aliases, model.version) if aliases is not None else None
        if error is not None:
            info["aliases_error"] = error
        return info

    return JSONResponse(
        {
            state.settings.track: described(state.stable),
            CANARY: described(state.canary) if state.canary else None,
            "canary_weight": state.routed_canary_weight,
        }
    )


_OUTPUTS = {
    "binary": {"score": "probability of the positive class (0..1)"},
    "multiclass": {
        "class": "the predicted class",
        "probabilities": "every class's probability (they sum to 1)",
        "score": "the predicted class's probability",
    },
    "regression": {"value": "the predicted value", "score": "the predicted value"},
}


@router.get("/schema")
def model_schema(request: Request) -> JSONResponse:
    """The request fields and types, from the served model's signature and feature spec."""
    model = serving_state(request).stable
    if model is None:
        return JSONResponse({"detail": "no model loaded"}, status_code=503)
    return JSONResponse(
        {
            "model_version": model.version,
            "task": model.task,
            "features": model.codec.json_schema(),
            "signature": model.signature,
            "output": _OUTPUTS[model.task],
        }
    )
