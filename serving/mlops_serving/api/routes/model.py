"""``/model/*``: what the service serves and the request fields it expects."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from mlops_serving.api.deps import serving_state
from mlops_serving.state import CANARY

router = APIRouter(prefix="/model", tags=["model"])


@router.get("/info")
def model_info(request: Request) -> JSONResponse:
    """Name, version, alias, run id, data hash, code sha and training time per variant."""
    state = serving_state(request)
    if state.stable is None:
        return JSONResponse({"detail": "no model loaded"}, status_code=503)
    return JSONResponse(
        {
            state.settings.track: state.stable.info(),
            CANARY: state.canary.info() if state.canary else None,
            "canary_weight": state.routed_canary_weight,
        }
    )


@router.get("/schema")
def model_schema(request: Request) -> JSONResponse:
    """The request fields and types, from the served model's signature and feature spec."""
    model = serving_state(request).stable
    if model is None:
        return JSONResponse({"detail": "no model loaded"}, status_code=503)
    return JSONResponse(
        {
            "model_version": model.version,
            "features": model.codec.json_schema(),
            "signature": model.signature,
            "output": {"score": "probability that the customer churns (0..1)"},
        }
    )
