"""Liveness, readiness and Prometheus metrics, for the orchestrator and the scraper."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlops_serving.api.deps import serving_state

router = APIRouter(tags=["ops"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is alive (liveness)."""
    return {"status": "alive"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    """A model is loaded and serving (readiness); says why not, or why a reload failed."""
    state = serving_state(request)
    body = {**state.versions(), "last_errors": dict(state.last_errors)}
    if state.stable is None:
        return JSONResponse({"status": "not ready", **body}, status_code=503)
    return JSONResponse({"status": "ready", **body})


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    registry = serving_state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
