"""The HTTP surface of the bridge: ``POST /mlflow`` (under ``/mlops-webhooks`` in Airflow).

Order of checks, each failing closed: a secret is configured (else 503, MLflow retries) ->
signature and timestamp (401) -> payload (400) -> event kind (202 ignored / 200 test ping) ->
asset and delivery id in the database (202 no DAG / 401 replay / 201 created). Nothing touches
the database before the signature is verified.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mlops_provider.webhooks.assets import Outcome, record_registry_event
from mlops_provider.webhooks.events import Ignored, PayloadError, RegistryEvent, parse
from mlops_provider.webhooks.mount import MLFLOW_PATH, URL_PREFIX
from mlops_provider.webhooks.signature import (
    DEFAULT_TOLERANCE_S,
    SignatureError,
    VerifiedDelivery,
    verify,
)

log = logging.getLogger(__name__)

SECRET_ENV = "MLOPS_WEBHOOK_SECRET"  # noqa: S105 - the name of the variable, not a secret
SECRET_CONN_ID = "mlflow_webhook"  # noqa: S105 - a connection id
TOLERANCE_ENV = "MLOPS_WEBHOOK_TOLERANCE_S"
MAX_BODY_BYTES = 1 << 20  # registry payloads are a few hundred bytes
NO_SECRET = (
    f"no webhook secret configured on the Airflow API server: set {SECRET_ENV} or the password "
    f"of connection {SECRET_CONN_ID!r}, and register the same secret in MLflow "
    f"(scripts/register_webhook.py); refusing every delivery until then"
)


def resolve_secret() -> str | None:
    """``MLOPS_WEBHOOK_SECRET``, else the password of connection ``mlflow_webhook``."""
    secret = os.environ.get(SECRET_ENV, "").strip()
    if secret:
        return secret
    from airflow.models.connection import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get_connection_from_secrets(SECRET_CONN_ID)
    except AirflowNotFoundException:
        return None
    return (conn.password or "").strip() or None


def _tolerance_from_env() -> float:
    raw = os.environ.get(TOLERANCE_ENV, "").strip()
    if not raw:
        return DEFAULT_TOLERANCE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TOLERANCE_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{TOLERANCE_ENV} must be positive, got {raw!r}")
    return value


def _reply(code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


def create_app(
    *,
    secret_provider: Callable[[], str | None] = resolve_secret,
    tolerance_s: float | None = None,
    clock: Callable[[], float] = time.time,
    recorder: Callable[..., Outcome] = record_registry_event,
) -> FastAPI:
    """The bridge app. Arguments exist for tests; Airflow uses the defaults."""
    tolerance = _tolerance_from_env() if tolerance_s is None else tolerance_s
    retention = timedelta(seconds=2 * tolerance + 60)
    app = FastAPI(
        title="MLflow registry webhooks",
        description="Signed MLflow registry events become Airflow asset events.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # unauthenticated surface: publish nothing beyond the endpoint
    )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Whether deliveries can be accepted (never reveals the secret)."""
        configured = bool(await run_in_threadpool(secret_provider))
        return {"secret_configured": configured, "tolerance_s": tolerance}

    async def _authenticate(request: Request) -> tuple[VerifiedDelivery, bytes] | JSONResponse:
        """Secret configured, size sane, signature and timestamp valid; else the refusal."""
        secret = await run_in_threadpool(secret_provider)
        if not secret:
            log.error("MLflow webhook refused: %s", NO_SECRET)
            return _reply(503, detail=NO_SECRET)
        declared = request.headers.get("content-length", "")
        too_large = declared.isdigit() and int(declared) > MAX_BODY_BYTES
        body = b"" if too_large else await request.body()
        if too_large or len(body) > MAX_BODY_BYTES:
            return _reply(413, detail=f"body over {MAX_BODY_BYTES} bytes")
        try:
            delivery = verify(
                request.headers, body, secret=secret, now=clock(), tolerance_s=tolerance
            )
        except SignatureError as err:
            log.warning("MLflow webhook rejected (401): %s", err)
            return _reply(401, detail=f"delivery rejected: {err}")
        return delivery, body

    @app.post(MLFLOW_PATH)
    async def mlflow_webhook(request: Request) -> JSONResponse:
        authenticated = await _authenticate(request)
        if isinstance(authenticated, JSONResponse):
            return authenticated
        delivery, body = authenticated
        try:
            parsed = parse(body, delivery.delivery_id)
        except PayloadError as err:
            log.warning("MLflow webhook %s: bad payload: %s", delivery.delivery_id, err)
            return _reply(400, detail=str(err), delivery_id=delivery.delivery_id)
        if isinstance(parsed, Ignored):
            log.info("MLflow webhook %s ignored: %s", delivery.delivery_id, parsed.reason)
            return _reply(
                200 if parsed.test else 202,
                status="test" if parsed.test else "ignored",
                event=parsed.event,
                detail=parsed.reason,
                delivery_id=delivery.delivery_id,
            )
        return await _record(parsed)

    async def _record(event: RegistryEvent) -> JSONResponse:
        outcome: Outcome = await run_in_threadpool(recorder, event, retention=retention)
        fields = {
            "status": outcome.status,
            "event": event.event,
            "model_name": event.model_name,
            "version": event.version,
            "delivery_id": event.delivery_id,
            "detail": outcome.detail,
        }
        if outcome.status == "replayed":
            log.warning("MLflow webhook rejected (401): %s", outcome.detail)
            return _reply(401, **fields)
        if outcome.status == "ignored":
            log.info("MLflow webhook %s ignored: %s", event.delivery_id, outcome.detail)
            return _reply(202, **fields)
        log.info(
            "MLflow webhook %s: %s %s v%s -> %s",
            event.delivery_id,
            event.event,
            event.model_name,
            event.version,
            outcome.detail,
        )
        return _reply(201, asset_event_id=outcome.asset_event_id, **fields)

    return app


def create_standalone_app() -> FastAPI:
    """The bridge mounted under ``/mlops-webhooks`` exactly as Airflow's API server mounts it
    (``app.mount(url_prefix, subapp)``), for running it on its own (``uvicorn --factory``)."""
    root = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    root.mount(URL_PREFIX, create_app())
    return root
