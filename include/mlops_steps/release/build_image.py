"""build-image: the serving image (or, locally, the model-store bundle) for one model version.

The step checks the version in the registry, skips a build the model version already records
(remote builders) and records a finished one on it; the names, the record and the builders are
described in :mod:`mlops_steps.release.builders.base`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mlops_steps.common.tracking import connect
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.release.builders import open_builder
from mlops_steps.release.builders.base import (
    BACKEND_TAG,
    BUILD_URL_TAG,
    BUILT_AT_TAG,
    REF_TAG,
    BuildRequest,
    Built,
    image_ref,
)

log = logging.getLogger("mlops_steps")

_FULL_SHA = re.compile(r"[0-9a-f]{40}")


def run_build_image(
    settings: Settings, version: str, code_sha: str | None = None
) -> dict[str, Any]:
    """Build (or find already built) the serving image of ``version`` at ``code_sha`` (default:
    the code that runs)."""
    version = _check_version(version)
    sha = (code_sha or code_version()).strip()
    backend = settings.image_build.builder
    builder = open_builder(settings)
    if builder.remote:
        _require_committed(sha, backend)
    client = connect()
    model_version = _ready_version(client, settings.model_name, version)
    request = BuildRequest(
        model_name=settings.model_name,
        version=version,
        run_id=model_version.run_id,
        code_sha=sha,
        ref=image_ref(settings, version, sha),
    )
    tags = dict(model_version.tags or {})
    recorded = tags.get(REF_TAG) == request.ref and tags.get(BACKEND_TAG) == backend
    if recorded and builder.remote:
        log.info(
            "%s v%s: %s was already built by %s", request.model_name, version, request.ref, backend
        )
        built = Built(
            built_now=False, built_at=tags.get(BUILT_AT_TAG, ""), build_url=tags.get(BUILD_URL_TAG)
        )
    else:
        built = builder.build(request)
    if built.built_now or not recorded:
        record = {REF_TAG: request.ref, BACKEND_TAG: backend, BUILT_AT_TAG: built.built_at}
        if built.build_url:
            record[BUILD_URL_TAG] = built.build_url
        for key, value in record.items():
            client.set_model_version_tag(request.model_name, version, key, value)
    return {
        "model_name": request.model_name,
        "version": version,
        "image_ref": request.ref,
        "backend": backend,
        "built_now": built.built_now,
        "bundle_path": str(built.bundle_path) if built.bundle_path is not None else None,
        "build_url": built.build_url,
        "code_sha": sha,
    }


def _check_version(version: str) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise StepError(
            f"{version!r} is not a model version number",
            subject="--version",
            fix="pass the registered version's number (e.g. 7)",
        )
    return str(int(text))


def _require_committed(sha: str, backend: str) -> None:
    if not _FULL_SHA.fullmatch(sha):
        raise StepError(
            f"{sha!r} is not a full commit sha; the {backend} builder builds from the repository "
            "at that commit, so uncommitted or unknown code cannot be built",
            subject="code sha",
            fix="commit and push the code (the task image bakes its sha in as MLOPS_CODE_SHA)",
        )


def _ready_version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    subject = f"{name} v{version}"
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as exc:
        raise StepError(
            f"model version does not exist ({exc.error_code})",
            subject=subject,
            fix="register it first (the training pipeline's register step) or pass an existing "
            "version",
        ) from None
    if model_version.status != "READY":
        raise StepError(
            f"is {model_version.status}, not READY",
            subject=subject,
            fix="wait for the registration to finish, or register the run again",
        )
    return model_version
