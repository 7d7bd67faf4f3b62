"""The FastAPI app: predictions from the stable (champion) model and a canary variant.

Run: ``uvicorn --factory mlops_serving.app:create_app`` (settings from ``SERVING_*`` env vars).

The prediction endpoints read the body with orjson and validate it against the served model's own
feature spec (see :mod:`mlops_serving.model`) instead of a pydantic model: the input schema belongs
to the model version, which changes at run time, and the hot path stays a few dozen microseconds.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import logging
import os
import random
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from mlops_serving.codec import InvalidInput
from mlops_serving.config import ServingSettings
from mlops_serving.metrics import ServingMetrics
from mlops_serving.model import LoadedModel, ModelLoadError, load_model
from mlops_serving.predlog import PredictionLog, RequestBody

log = logging.getLogger("mlops_serving")
STABLE, CANARY = "stable", "canary"


def _json(payload: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def _invalid(errors: list[dict[str, Any]]) -> Response:
    return _json({"detail": errors}, 422)


class ServingState:
    """The variants being served and the registry client; swaps are single assignments."""

    def __init__(
        self,
        settings: ServingSettings,
        metrics: ServingMetrics,
        loader: Callable[[str, str], LoadedModel],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._loader = loader
        self.stable: LoadedModel | None = None
        self.canary: LoadedModel | None = None
        self.canary_weight = 0.0
        self.last_errors: dict[str, str] = {}
        self.admin_lock = threading.Lock()
        self.stop = threading.Event()

    def load(self, variant: str, ref: str) -> LoadedModel:
        """Load ``ref`` beside whatever is serving; on failure record why and re-raise."""
        try:
            model = self._loader(self.settings.model_name, ref)
        except ModelLoadError as exc:
            self.metrics.load_failures.labels(variant).inc()
            self.last_errors[variant] = str(exc)
            log.error("loading %s variant from %r failed: %s", variant, ref, exc)
            raise
        self.last_errors.pop(variant, None)
        return model

    def publish(self) -> None:
        self.metrics.model_info.clear()
        for variant, model in ((STABLE, self.stable), (CANARY, self.canary)):
            if model is not None:
                self.metrics.model_info.labels(variant, model.version, model.run_id).set(1)
        self.metrics.canary_weight.set(self.canary_weight if self.canary else 0.0)

    def route(self, entity_id: str | None) -> tuple[str, LoadedModel | None]:
        """Sticky by entity id (same customer, same variant), random without one."""
        canary, weight = self.canary, self.canary_weight
        if canary is not None and weight > 0.0:
            if entity_id is not None:
                bucket = zlib.crc32(entity_id.encode()) / 0x1_0000_0000
            else:
                bucket = random.random()  # noqa: S311 (traffic split, not security)
            if bucket < weight:
                return CANARY, canary
        return self.settings.track, self.stable

    def load_at_startup(self) -> None:
        """Keep trying the stable model (MLflow may start after us), then the canary once."""
        delay = 1.0
        while not self.stop.is_set() and self.stable is None:
            try:
                self.stable = self.load(STABLE, self.settings.stable_ref)
            except ModelLoadError:
                self.stop.wait(delay)
                delay = min(delay * 2, self.settings.load_retry_max_s)
        if self.settings.canary_ref and not self.stop.is_set():
            with contextlib.suppress(ModelLoadError):
                self.canary = self.load(CANARY, self.settings.canary_ref)
                self.canary_weight = self.settings.canary_weight
        self.publish()
        # Move everything loaded so far (mlflow, lightgbm, the app) out of the collector's reach:
        # full collections then only scan request garbage, which keeps tail latency flat.
        gc.collect()
        gc.freeze()


class CanaryRequest(BaseModel):
    ref: str = Field(
        description="Alias (e.g. challenger), version number, or bundle:<dir> in the model store"
    )
    weight: float = Field(ge=0.0, le=1.0, description="Share of traffic for the canary")


class WeightRequest(BaseModel):
    weight: float = Field(ge=0.0, le=1.0)


class ReloadRequest(BaseModel):
    variant: str = Field(default=STABLE, pattern="^(stable|canary)$")


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


def create_app(
    settings: ServingSettings | None = None,
    loader: Callable[[str, str], LoadedModel] | None = None,
) -> FastAPI:
    """Build the app. ``loader`` defaults to loading from the MLflow registry."""
    settings = settings or ServingSettings.from_env()
    settings.check()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    metrics = ServingMetrics()
    if loader is None:
        from mlflow import MlflowClient

        client = MlflowClient()
        store = Path(settings.model_store) if settings.model_store else None
        loader = lambda name, ref: load_model(client, name, ref, store)  # noqa: E731
    state = ServingState(settings, metrics, loader)
    predictions = PredictionLog(
        settings.prediction_log,
        flush_interval=settings.prediction_log_flush_s,
        on_drop=metrics.log_dropped.inc,
        writer="process",
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        predictions.start()
        loader_thread = threading.Thread(target=state.load_at_startup, daemon=True)
        loader_thread.start()
        yield
        state.stop.set()
        loader_thread.join(timeout=10)
        predictions.close()

    app = FastAPI(
        title="churn model service",
        description="Churn probability from the champion model, with a canary variant.",
        version="1",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.state.predictions = predictions
    bearer = HTTPBearer(auto_error=False)
    expected_token = settings.admin_token.encode()

    def require_admin(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if settings.dev_mode and not expected_token:
            return
        if not hmac.compare_digest(credentials.credentials.encode(), expected_token):
            raise HTTPException(403, "invalid token")

    def _finish(endpoint: str, variant: str, version: str, status: int, started: float) -> None:
        metrics.request(endpoint, variant, version, status, time.perf_counter() - started)

    async def _payload(
        request: Request, endpoint: str, started: float
    ) -> tuple[bytes, dict[str, Any]] | Response:
        """The body and the JSON object in it, or the 422 to answer (already counted)."""
        body = await request.body()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _reject(endpoint, started, ["body"], f"Invalid JSON: {exc}", "json")
        if type(payload) is not dict:
            return _reject(endpoint, started, ["body"], "Expected a JSON object", "dict")
        return body, payload

    def _reject(endpoint: str, started: float, loc: list[Any], msg: str, kind: str) -> Response:
        """A 422 for a body of the wrong shape, counted before a variant was chosen."""
        _finish(endpoint, "none", "none", 422, started)
        return _invalid([{"loc": loc, "msg": msg, "type": kind}])

    def _served(
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
        predictions.record(
            request_id=request_id,
            entity_ids=entity_ids,
            variant=variant,
            version=model.version,
            features=features,
            scores=scores,
            timestamp=time.time(),
        )
        _finish(endpoint, variant, model.version, 200, started)
        return request_id

    def _not_ready(endpoint: str, started: float) -> Response:
        _finish(endpoint, "none", "none", 503, started)
        reason = state.last_errors.get(STABLE, "the model is still loading")
        return _json({"detail": f"no model loaded: {reason}"}, 503)

    @app.post("/predict", openapi_extra=_PREDICT_BODY, tags=["predict"])
    async def predict(request: Request) -> Response:
        """Score one customer."""
        started = time.perf_counter()
        received = await _payload(request, "predict", started)
        if isinstance(received, Response):
            return received
        body, payload = received
        entity_id = payload.get("entity_id")
        if entity_id is not None and type(entity_id) is not str:
            return _reject(
                "predict", started, ["body", "entity_id"], "Expected a string", "string_type"
            )
        variant, model = state.route(entity_id)
        if model is None:
            return _not_ready("predict", started)
        features = payload.get("features")
        try:
            values = model.codec.encode_one(features, ["body", "features"])
        except InvalidInput as exc:
            _finish("predict", variant, model.version, 422, started)
            return _invalid(exc.errors)
        score = model.predict_one(values)
        metrics.scored(variant, model.version, score)
        request_id = _served(
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

    @app.post("/predict/batch", openapi_extra=_BATCH_BODY, tags=["predict"])
    async def predict_batch(request: Request) -> Response:
        """Score many customers in one request (one variant answers the whole batch)."""
        started = time.perf_counter()
        received = await _payload(request, "batch", started)
        if isinstance(received, Response):
            return received
        body, payload = received
        instances = payload.get("instances")
        if type(instances) is not list or not instances:
            return _reject(
                "batch", started, ["body", "instances"], "Expected a non-empty list", "list_type"
            )
        if len(instances) > settings.max_batch_rows:
            _finish("batch", "none", "none", 413, started)
            return _json(
                {
                    "detail": f"batch of {len(instances)} rows exceeds the limit of "
                    f"{settings.max_batch_rows} (SERVING_MAX_BATCH_ROWS); split the request"
                },
                413,
            )
        entity_ids = payload.get("entity_ids")
        if entity_ids is not None and (
            type(entity_ids) is not list or len(entity_ids) != len(instances)
        ):
            return _reject(
                "batch",
                started,
                ["body", "entity_ids"],
                "Expected one entity id per instance",
                "list_type",
            )
        routing_key = payload.get("entity_id")
        variant, model = state.route(routing_key if type(routing_key) is str else None)
        if model is None:
            return _not_ready("batch", started)
        try:
            matrix = model.codec.encode_many(instances, ["body", "instances"])
        except InvalidInput as exc:
            _finish("batch", variant, model.version, 422, started)
            return _invalid(exc.errors)
        scores = model.predict(matrix)
        metrics.scored(variant, model.version, scores)
        request_id = _served(
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

    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        """The process is alive (liveness)."""
        return {"status": "alive"}

    @app.get("/ready", tags=["ops"])
    def ready() -> JSONResponse:
        """A model is loaded and serving (readiness); says why not, or why a reload failed."""
        body = {
            "stable": state.stable.version if state.stable else None,
            "canary": state.canary.version if state.canary else None,
            "canary_weight": state.canary_weight if state.canary else 0.0,
            "last_errors": dict(state.last_errors),
        }
        if state.stable is None:
            return JSONResponse({"status": "not ready", **body}, status_code=503)
        return JSONResponse({"status": "ready", **body})

    @app.get("/model/info", tags=["model"])
    def model_info() -> JSONResponse:
        """Name, version, alias, run id, data hash, code sha and training time per variant."""
        if state.stable is None:
            return JSONResponse({"detail": "no model loaded"}, status_code=503)
        return JSONResponse(
            {
                settings.track: state.stable.info(),
                CANARY: state.canary.info() if state.canary else None,
                "canary_weight": state.canary_weight if state.canary else 0.0,
            }
        )

    @app.get("/model/schema", tags=["model"])
    def model_schema() -> JSONResponse:
        """The request fields and types, from the served model's signature and feature spec."""
        model = state.stable
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

    @app.get("/metrics", tags=["ops"])
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _state() -> dict[str, Any]:
        state.publish()
        return {
            "stable": state.stable.version if state.stable else None,
            "canary": state.canary.version if state.canary else None,
            "canary_weight": state.canary_weight if state.canary else 0.0,
        }

    admin = [Depends(require_admin)]

    @app.post("/admin/canary", dependencies=admin, tags=["admin"])
    def set_canary(body: CanaryRequest) -> dict[str, Any]:
        """Load a model version as the canary (beside the stable one) and route a share to it."""
        with state.admin_lock:
            try:
                model = state.load(CANARY, body.ref)
            except ModelLoadError as exc:
                raise HTTPException(502, f"canary not loaded, nothing changed: {exc}") from None
            state.canary, state.canary_weight = model, body.weight
            return _state()

    @app.post("/admin/canary/weight", dependencies=admin, tags=["admin"])
    def set_weight(body: WeightRequest) -> dict[str, Any]:
        with state.admin_lock:
            if state.canary is None:
                raise HTTPException(409, "no canary loaded; POST /admin/canary first")
            state.canary_weight = body.weight
            return _state()

    @app.post("/admin/promote", dependencies=admin, tags=["admin"])
    def promote() -> dict[str, Any]:
        """The canary becomes the stable model and takes all traffic."""
        with state.admin_lock:
            if state.canary is None:
                raise HTTPException(409, "no canary to promote")
            state.stable, state.canary, state.canary_weight = state.canary, None, 0.0
            return _state()

    @app.post("/admin/rollback", dependencies=admin, tags=["admin"])
    def rollback() -> dict[str, Any]:
        """Stop routing to the canary and unload it; the stable model is untouched."""
        with state.admin_lock:
            state.canary, state.canary_weight = None, 0.0
            return _state()

    @app.post("/admin/reload", dependencies=admin, tags=["admin"])
    def reload(body: ReloadRequest) -> dict[str, Any]:
        """Re-resolve a variant's alias in the registry and swap in the new version once it
        has loaded and passed a smoke prediction; on failure the old one keeps serving."""
        with state.admin_lock:
            current = state.stable if body.variant == STABLE else state.canary
            ref = settings.stable_ref if body.variant == STABLE else (
                current.ref if current else settings.canary_ref
            )  # fmt: skip
            if not ref:
                raise HTTPException(409, f"no reference to reload the {body.variant} variant from")
            try:
                model = state.load(body.variant, ref)
            except ModelLoadError as exc:
                state.publish()
                raise HTTPException(
                    502, f"reload failed, still serving the previous model: {exc}"
                ) from None
            if body.variant == STABLE:
                state.stable = model
            else:
                state.canary = model
            return {**_state(), "reloaded": body.variant, "version": model.version}

    return app
