"""The model service: predictions from the stable (champion) model and a canary variant.

Run: ``uvicorn --factory mlops_serving.app:create_app`` (settings from ``SERVING_*`` env vars).
:func:`create_app` builds one app's state and includes the routers of :mod:`mlops_serving.api`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mlops_serving import openapi
from mlops_serving.aliases import LiveAliases, registry_aliases
from mlops_serving.api.routes import admin, model, ops, predict
from mlops_serving.body_limit import BodySizeLimit
from mlops_serving.config import ServingSettings
from mlops_serving.metrics import ServingMetrics
from mlops_serving.model import LoadedModel, load_model
from mlops_serving.predlog import PredictionLog
from mlops_serving.state import ServingState


def create_app(
    settings: ServingSettings | None = None,
    loader: Callable[[str, str], LoadedModel] | None = None,
) -> FastAPI:
    """Build the app. ``loader`` defaults to loading from the MLflow registry."""
    settings = settings if settings is not None else ServingSettings()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    metrics = ServingMetrics()
    app = FastAPI(
        title=f"{settings.model_name} model service",
        description="Predictions from the champion model, with a canary variant.",
        version="1",
        lifespan=_lifespan,
    )
    predictions = PredictionLog(
        settings.prediction_log,
        flush_interval=settings.prediction_log_flush_ms / 1000.0,
        on_drop=metrics.log_dropped.inc,
        writer="process",
        log_format=settings.prediction_log_format,
    )
    client = None
    if loader is None:
        from mlflow import MlflowClient

        client = MlflowClient()
        loader = _registry_loader(client, settings)
    # Every version the service loads is declared to the log: Parquet columns typed by its spec.
    state = ServingState(settings, metrics, predictions, predictions.declaring(loader))
    if client is not None:
        state.aliases = LiveAliases(registry_aliases(client, settings.model_name))
    app.state["serving"] = state
    # /predict first: routes are matched in order, and it is the route that is measured.
    for router in (predict.router, ops.router, model.router, admin.router):
        app.include_router(router)
    # Starlette and uvicorn have no body size limit of their own (see body_limit).
    app.add_middleware(BodySizeLimit, max_bytes=settings.body_limit_bytes)
    app.add_exception_handler(Exception, _internal_error)
    # The document describes the served model's requests and answers (generated from its spec).
    openapi.install(app, state)
    return app


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Any route's unexpected error: a JSON 500 without the stack (uvicorn logs it)."""
    return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def _registry_loader(client: Any, settings: ServingSettings) -> Callable[[str, str], LoadedModel]:
    """Load by alias or version from the MLflow registry, or from the model store (a directory
    or s3://...)."""
    store = settings.model_store or None
    return lambda name, ref: load_model(client, name, ref, store)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the prediction log and load the models in the background (the app answers
    /health meanwhile); on shutdown stop loading and write out the log."""
    state: ServingState = app.state["serving"]
    predictions = state.predictions
    predictions.start()
    loader_thread = threading.Thread(target=state.load_at_startup, daemon=True)
    loader_thread.start()
    yield
    state.stop.set()
    loader_thread.join(timeout=10)
    predictions.close()
