"""The HTTP surface: ``GET /<path under the data root>`` (under ``/mlops-reports`` in Airflow).

Plugin apps are not behind Airflow's auth by themselves, so every route here depends on Airflow's
own ``get_user`` (the UI's ``_token`` cookie or an ``Authorization: Bearer`` JWT: 401 without one,
403 for an invalid one) and on the auth manager allowing the user to read DAG runs (the reports
are what the runs wrote; 403 otherwise). Only then is the path looked at, so an anonymous caller
learns nothing about which files exist.

A path is served only if it names a report kind (``CONTENT_TYPES``), has no ``.``/``..``/hidden
segment, and its real path (symlinks resolved) is a regular file inside the real data root;
anything else is 404. On an object-store data root (``MLOPS_DATA_ROOT=s3://...``) the same path
names an object under the root's prefix, streamed in chunks (503 while the store is down).
HTML answers carry ``Content-Security-Policy: sandbox``: a report that embeds data values runs
its scripts in an opaque origin, never as the approver against Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.responses import FileResponse, Response, StreamingResponse

from mlops_steps.core.report_links import CONTENT_TYPES, report_parts
from mlops_steps.core.settings import get_settings

#: HTML reports run in a sandbox (opaque origin): scripts and pop-ups work, same-origin calls
#: to Airflow's API with the approver's cookie do not.
HTML_POLICY = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads"
NOT_FOUND = "no such report"


def _data_root() -> Path:
    return get_settings().data_root


def _data_plane() -> str:
    return get_settings().data_plane


_CHUNK_BYTES = 1 << 16


def _object(store: str, relative: str) -> StreamingResponse | None:
    """The report object ``relative`` names under the store's prefix, streamed; None when there
    is none (or the path is not a report's)."""
    import boto3  # only where the data root is an object store
    from botocore.exceptions import BotoCoreError, ClientError

    parts = report_parts(relative)
    if parts is None:
        return None
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    key = "/".join([p for p in prefix.split("/") if p] + list(parts))
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NoSuchBucket"}:
            return None
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the report store refused"
        ) from None
    except BotoCoreError:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the report store is unreachable; retry later"
        ) from None
    media_type = CONTENT_TYPES[Path(parts[-1]).suffix.lower()]
    return StreamingResponse(body.iter_chunks(_CHUNK_BYTES), media_type=media_type)


def require_reader(user: Annotated[BaseUser, Depends(get_user)]) -> BaseUser:
    """An authenticated user the auth manager lets read DAG runs (403 otherwise)."""
    allowed = get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, user=user
    )
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not allowed to read DAG runs' reports")
    return user


def locate(root: Path, relative: str) -> Path | None:
    """The real file ``relative`` names inside ``root``, or None (never raises on bad input)."""
    parts = report_parts(relative)
    if parts is None:
        return None
    try:
        real_root = root.resolve(strict=True)
        target = real_root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, an odd name
        return None
    if not target.is_relative_to(real_root) or not target.is_file():
        return None
    # A symlink inside the root may point at a data file under a report's name: judge the target.
    if target.suffix.lower() not in CONTENT_TYPES:
        return None
    return target


def create_app(
    *, data_root: Callable[[], Path] = _data_root, data_plane: Callable[[], str] = _data_plane
) -> FastAPI:
    """The reports app; ``data_root`` and ``data_plane`` are read per request (tests point them
    elsewhere)."""
    app = FastAPI(
        title="MLOps reports",
        description="Validation, gate, shift, drift and canary reports, read-only.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(require_reader)],
    )

    @app.get("/{relative:path}", response_class=FileResponse)
    def report(relative: str) -> Response:
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"}
        store = data_plane()
        answer: Response | None
        if store:
            answer = _object(store, relative)
        else:
            target = locate(data_root(), relative)
            answer = None
            if target is not None:
                answer = FileResponse(target, media_type=CONTENT_TYPES[target.suffix.lower()])
        if answer is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
        if (answer.media_type or "").startswith("text/html"):
            headers["Content-Security-Policy"] = HTML_POLICY
        answer.headers.update(headers)
        return answer

    return app
