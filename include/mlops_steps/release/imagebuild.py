"""build-image: the serving image (or, locally, the model-store bundle) for one model version.

The reference is ``{MLOPS_SERVING_IMAGE}:v{version}-{code_sha[:12]}`` (``-dirty`` appended for
uncommitted code): one model version served by one version of the code. The same pair is never
built twice. A finished build is recorded on the MLflow model version as tags

* ``mlops.image.ref`` (the reference), ``mlops.image.backend`` (``bundle``, ``ci``, ``kaniko``),
  ``mlops.image.built_at`` (UTC, ISO 8601) and, for ``ci`` / ``kaniko``, ``mlops.image.build_url``
  (the workflow run's page, or the build Job's API path ``kubernetes:///apis/batch/v1/...``),

and a later call with the same reference and backend returns ``built_now: False`` at once.

Backends (``MLOPS_IMAGE_BUILDER``):

``bundle`` (the embedded default; no Docker engine needed)
    The version's MLflow model directory, downloaded into ``$MLOPS_HOME/model-store/<model>/
    v<version>-<sha12>/``, which the model service loads with ``SERVING_MODEL_STORE`` set to the
    store and the ref ``bundle:v<version>-<sha12>``. Layout::

        v7-1a2b3c4d5e6f/
          manifest.json     # below
          model/            # the MLflow model directory exactly as downloaded, e.g.
            MLmodel  churn_pyfunc.py  artifacts/booster.txt  artifacts/feature_spec.json
            requirements.txt  python_env.yaml  conda.yaml  input_example.json ...

    ``manifest.json`` (``"format": 1``; keys are stable, readers ignore unknown ones)::

        {"format": 1, "model_name": "churn", "version": "7", "run_id": "...",
         "code_sha": "...", "image_ref": "...:v7-1a2b3c4d5e6f", "created_at": "...Z",
         "source_uri": "models:/churn/7", "model_dir": "model",
         "files": {"model/MLmodel": {"sha256": "<hex>", "size": 123}, ...}}

    ``files`` lists every file of the bundle except the manifest, by path relative to the bundle.
    The bundle is written into a temporary directory beside it and renamed into place, so a reader
    sees a whole bundle or none; a bundle that fails :func:`verify_bundle` is built again.

``ci``
    A GitHub Actions ``workflow_dispatch`` (``MLOPS_CI_DISPATCH_URL`` = ``.../actions/workflows/
    <file>/dispatches``, bearer token ``MLOPS_CI_TOKEN``). The workflow must put the image tag and
    the request id, space-separated, in its ``run-name`` (see ``deploy/ci/build-serving-image.yml``)
    so the step can find its run; a queued, running or successful run for the same tag is waited on
    instead of dispatching another.

``kaniko``
    A ``batch/v1`` Job in the cluster running the kaniko executor on ``serving/Dockerfile`` from the
    git context pinned to the code sha, pushing with the docker config Secret
    ``MLOPS_KANIKO_PUSH_SECRET``. The Job's name derives from the reference, so a second build of
    the same tag attaches to the running Job (HTTP 409) instead of starting another.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_steps.common.storage import sha256_file
from mlops_steps.common.tracking import connect
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.release import kubeapi

log = logging.getLogger("mlops_steps")

REF_TAG = "mlops.image.ref"
BACKEND_TAG = "mlops.image.backend"
BUILT_AT_TAG = "mlops.image.built_at"
BUILD_URL_TAG = "mlops.image.build_url"
CI_TOKEN_ENV = "MLOPS_CI_TOKEN"  # noqa: S105 (the variable's name, not a token)
MANIFEST = "manifest.json"
MODEL_DIR = "model"
MANIFEST_FORMAT = 1
SERVING_DOCKERFILE = "serving/Dockerfile"
KANIKO_CONTAINER = "kaniko"
KANIKO_POLL_S = 5.0

_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_DNS_INVALID = re.compile(r"[^a-z0-9-]")
_HTTP_TIMEOUT = (10.0, 30.0)  # connect, read
_HTTP_ATTEMPTS = 4
_CLOCK_SKEW_S = 120.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- names -------------------------------------------------------------------------------------


def image_tag(version: str, code_sha: str) -> str:
    """``v<version>-<sha12>`` (``-dirty`` kept), reduced to a valid OCI tag."""
    sha = code_sha.strip() or "unknown"
    suffix = "-dirty" if sha.endswith("-dirty") else ""
    raw = f"v{version}-{sha.removesuffix('-dirty')[:12]}{suffix}"
    return _TAG_INVALID.sub("-", raw)[:128]


def image_ref(settings: Settings, version: str, code_sha: str) -> str:
    return f"{settings.image_build.serving_image}:{image_tag(version, code_sha)}"


def bundle_dir(settings: Settings, version: str, code_sha: str) -> Path:
    return settings.model_store / image_tag(version, code_sha)


def kaniko_job_name(ref: str) -> str:
    """A DNS-1123 Job name from the reference: readable tag plus a hash of the whole reference
    (two repositories may share a tag), at most 63 characters (the ``job-name`` pod label)."""
    tag = ref.rsplit(":", 1)[-1].lower()
    digest = hashlib.sha256(ref.encode()).hexdigest()[:8]
    stem = _DNS_INVALID.sub("-", f"build-serving-{tag}")[: 63 - 9].strip("-")
    return f"{stem}-{digest}"


# -- the registry ---------------------------------------------------------------------------------


def _check_version(version: str) -> str:
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise StepError(
            f"{version!r} is not a model version number",
            subject="--version",
            fix="pass the registered version's number (e.g. 7)",
        )
    return str(int(text))


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


def _record(client: Any, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _result(
    settings: Settings,
    version: str,
    ref: str,
    sha: str,
    *,
    built_now: bool,
    bundle_path: Path | None = None,
    build_url: str | None = None,
) -> dict[str, Any]:
    return {
        "model_name": settings.model_name,
        "version": version,
        "image_ref": ref,
        "backend": settings.image_build.builder,
        "built_now": built_now,
        "bundle_path": str(bundle_path) if bundle_path is not None else None,
        "build_url": build_url,
        "code_sha": sha,
    }


def run_build_image(
    settings: Settings, version: str, code_sha: str | None = None
) -> dict[str, Any]:
    """Build (or find already built) the serving image of ``version`` at ``code_sha`` (default:
    the code that runs)."""
    version = _check_version(version)
    sha = (code_sha or code_version()).strip()
    ref = image_ref(settings, version, sha)
    backend = settings.image_build.builder
    name = settings.model_name
    if backend != "bundle":
        _require_committed(sha, backend)
    client = connect()
    model_version = _ready_version(client, name, version)
    tags = dict(model_version.tags or {})
    if backend == "bundle":
        return _build_bundle(settings, client, model_version, ref, sha)

    if tags.get(REF_TAG) == ref and tags.get(BACKEND_TAG) == backend:
        log.info("%s v%s: %s was already built by %s", name, version, ref, backend)
        return _result(
            settings, version, ref, sha, built_now=False, build_url=tags.get(BUILD_URL_TAG)
        )
    if backend == "ci":
        build_url = _build_ci(settings, version, sha, ref)
    else:
        build_url = _build_kaniko(settings, version, sha, ref)
    _record(
        client,
        name,
        version,
        {REF_TAG: ref, BACKEND_TAG: backend, BUILT_AT_TAG: _now(), BUILD_URL_TAG: build_url},
    )
    return _result(settings, version, ref, sha, built_now=True, build_url=build_url)


def _require_committed(sha: str, backend: str) -> None:
    if not _FULL_SHA.fullmatch(sha):
        raise StepError(
            f"{sha!r} is not a full commit sha; the {backend} builder builds from the repository "
            "at that commit, so uncommitted or unknown code cannot be built",
            subject="code sha",
            fix="commit and push the code (the task image bakes its sha in as MLOPS_CODE_SHA)",
        )


# -- bundle --------------------------------------------------------------------------------------


def _file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root``, by POSIX path relative to it."""
    return {
        path.relative_to(root).as_posix(): {
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
        }
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def verify_bundle(path: Path | str) -> dict[str, Any]:
    """Re-hash every file of a bundle against its manifest; the manifest when all match.

    Raises StepError naming the first file that is missing, changed or not in the manifest.
    """
    bundle = Path(path)
    manifest_path = bundle / MANIFEST
    rebuild = "build it again (mlops-step build-image --version N replaces a broken bundle)"
    if not manifest_path.is_file():
        raise StepError("has no manifest (partial or foreign)", subject=str(bundle), fix=rebuild)
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = manifest["files"]
        model_dir = str(manifest["model_dir"])
        if not isinstance(files, dict) or not files:
            raise ValueError("files is empty")
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(
            f"is not a bundle manifest ({exc})", subject=str(manifest_path), fix=rebuild
        ) from None
    if f"{model_dir}/MLmodel" not in files:
        raise StepError(f"lists no {model_dir}/MLmodel", subject=str(manifest_path), fix=rebuild)
    root = bundle.resolve()
    for relative, expected in sorted(files.items()):
        target = (bundle / relative).resolve()
        if Path(relative).is_absolute() or not target.is_relative_to(root):
            raise StepError(
                "points outside the bundle", subject=f"{manifest_path}: {relative}", fix=rebuild
            )
        if not target.is_file():
            raise StepError("is missing", subject=str(bundle / relative), fix=rebuild)
        size = target.stat().st_size
        if size != expected.get("size") or sha256_file(target) != expected.get("sha256"):
            raise StepError(
                f"does not match the manifest (size {size}, expected {expected.get('size')}; "
                "or its sha256 differs)",
                subject=str(bundle / relative),
                fix=rebuild,
            )
    for extra in sorted(bundle.rglob("*")):
        relative = extra.relative_to(bundle).as_posix()
        if extra.is_file() and relative != MANIFEST and relative not in files:
            raise StepError("is not in the manifest", subject=str(extra), fix=rebuild)
    return manifest


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One builder per bundle at a time (a second one then finds the finished bundle)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_bundle(
    settings: Settings, client: Any, model_version: Any, ref: str, sha: str
) -> dict[str, Any]:
    name, version = settings.model_name, str(model_version.version)
    target = bundle_dir(settings, version, sha)
    store = target.parent
    store.mkdir(parents=True, exist_ok=True)
    with _locked(store / f".{target.name}.lock"):
        manifest = _usable_bundle(target, name, version, ref)
        built_now = manifest is None
        if manifest is None:
            for stale in store.glob(f".{target.name}.*-*"):  # leftovers of a crashed build
                shutil.rmtree(stale, ignore_errors=True)
            manifest = _write_bundle(target, name, model_version, ref, sha)
        tags = dict(model_version.tags or {})
        if built_now or tags.get(REF_TAG) != ref or tags.get(BACKEND_TAG) != "bundle":
            _record(
                client,
                name,
                version,
                {REF_TAG: ref, BACKEND_TAG: "bundle", BUILT_AT_TAG: manifest["created_at"]},
            )
    log.info("%s v%s: bundle %s (%s)", name, version, target, "built" if built_now else "found")
    return _result(settings, version, ref, sha, built_now=built_now, bundle_path=target)


def _usable_bundle(target: Path, name: str, version: str, ref: str) -> dict[str, Any] | None:
    if not target.exists():
        return None
    try:
        manifest = verify_bundle(target)
    except StepError as exc:
        log.warning("rebuilding the bundle: %s", exc)
        return None
    found = (manifest.get("model_name"), str(manifest.get("version")), manifest.get("image_ref"))
    if found != (name, version, ref):
        log.warning("rebuilding %s: its manifest names %s", target, found)
        return None
    return manifest


def _model_root(downloaded: Path) -> Path:
    """The directory holding ``MLmodel`` (the download itself, or its single subdirectory)."""
    if (downloaded / "MLmodel").is_file():
        return downloaded
    candidates = [p.parent for p in downloaded.rglob("MLmodel")]
    if len(candidates) != 1:
        raise StepError(
            f"the downloaded model has {len(candidates)} MLmodel files, expected one",
            subject=str(downloaded),
            fix="register an MLflow model (the training pipeline logs one per run)",
        )
    return candidates[0]


def _write_bundle(
    target: Path, name: str, model_version: Any, ref: str, sha: str
) -> dict[str, Any]:
    import mlflow.artifacts

    version = str(model_version.version)
    source = f"models:/{name}/{version}"
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        download = tmp / "download"
        download.mkdir()
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(download))
        )
        _model_root(local).rename(tmp / MODEL_DIR)
        shutil.rmtree(download, ignore_errors=True)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model_name": name,
            "version": version,
            "run_id": model_version.run_id,
            "code_sha": sha,
            "image_ref": ref,
            "created_at": _now(),
            "source_uri": source,
            "model_dir": MODEL_DIR,
            "files": {
                f"{MODEL_DIR}/{relative}": entry
                for relative, entry in _file_entries(tmp / MODEL_DIR).items()
            },
        }
        with (tmp / MANIFEST).open("w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        old = None
        if target.exists():  # a broken bundle: move it aside, swap, then delete it
            old = target.rename(target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# -- ci: a GitHub Actions workflow dispatch --------------------------------------------------------


class _CiApi:
    """The few GitHub Actions endpoints a dispatch needs, with retries on 5xx and lost
    connections. The token lives only in the session's headers and is never logged."""

    def __init__(self, settings: Settings, token: str) -> None:
        import requests

        build = settings.image_build
        self.dispatch_url = build.ci_dispatch_url.rstrip("/")
        if not self.dispatch_url.endswith("/dispatches"):
            raise StepError(
                "is not a workflow dispatch URL",
                subject="MLOPS_CI_DISPATCH_URL",
                fix="use https://api.github.com/repos/OWNER/REPO/actions/workflows/FILE/dispatches",
            )
        self.runs_url = self.dispatch_url.removesuffix("/dispatches") + "/runs"
        self.repo_url = self.dispatch_url.split("/actions/workflows/", 1)[0]
        self.poll_s = build.ci_poll_interval_s
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "airflow-mlops-build-image",
            }
        )

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        problem = ""
        for attempt in range(_HTTP_ATTEMPTS):
            try:
                response = self.session.request(method, url, timeout=_HTTP_TIMEOUT, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 500:
                    return self._checked(method, url, response)
                problem = f"HTTP {response.status_code}"
            if attempt + 1 < _HTTP_ATTEMPTS:
                log.warning("CI API %s %s: %s; retrying", method, url, problem)
                time.sleep(min(self.poll_s, 1.0) * 2**attempt)
        # Transient by nature: a crash (exit 1) so Airflow retries the step.
        raise RuntimeError(f"CI API {method} {url} failed {_HTTP_ATTEMPTS} times: {problem}")

    @staticmethod
    def _checked(method: str, url: str, response: Any) -> Any:
        status = response.status_code
        if status < 400:
            return response
        detail = response.text[:300]
        if status in (401, 403):
            raise StepError(
                f"the CI API refused the token (HTTP {status}: {detail})",
                subject=CI_TOKEN_ENV,
                fix="use a token allowed to run workflows (actions: write) on the repository",
            )
        if status == 404:
            raise StepError(
                f"not found (HTTP 404) on {method} {url}",
                subject="MLOPS_CI_DISPATCH_URL",
                fix="check the repository and workflow file name (and that the token can see them)",
            )
        raise StepError(f"HTTP {status}: {detail}", subject=f"{method} {url}")

    def runs(self, since: float) -> list[dict[str, Any]]:
        created = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {"event": "workflow_dispatch", "created": f">={created}", "per_page": "100"}
        body = self.request("GET", self.runs_url, params=params).json()
        return list(body.get("workflow_runs") or [])

    def run(self, run_id: int) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", f"{self.repo_url}/actions/runs/{run_id}").json()
        return body


def _titled(run: dict[str, Any], word: str) -> bool:
    title = f"{run.get('display_title') or ''} {run.get('name') or ''}"
    return word in title.split()


def _build_ci(settings: Settings, version: str, sha: str, ref: str) -> str:
    build = settings.image_build
    if not build.ci_dispatch_url:
        raise StepError(
            "is not set; the ci builder dispatches a workflow there",
            subject="MLOPS_CI_DISPATCH_URL",
            fix="set it to .../actions/workflows/FILE/dispatches, or MLOPS_IMAGE_BUILDER=bundle",
        )
    token = os.environ.get(CI_TOKEN_ENV, "").strip()
    if not token:
        raise StepError(
            "is not set; the ci builder needs a token to dispatch the build workflow",
            subject=CI_TOKEN_ENV,
            fix="export it (in pods: the Secret key token of MLOPS_K8S_CI_SECRET)",
        )
    api = _CiApi(settings, token)
    tag = ref.rsplit(":", 1)[-1]
    deadline = time.monotonic() + build.ci_timeout_s
    started = time.time()
    # A build of this tag already queued, running or done: wait on it instead of another one.
    earlier = [
        r
        for r in api.runs(started - build.ci_timeout_s)
        if _titled(r, tag) and (r.get("status") != "completed" or r.get("conclusion") == "success")
    ]
    if earlier:
        run = max(earlier, key=lambda r: int(r["id"]))
        log.info("CI: attaching to run %s of %s (%s)", run["id"], tag, run.get("html_url"))
    else:
        request_id = f"{tag}-{uuid.uuid4().hex[:8]}"
        body = {
            "ref": build.ci_ref,
            "inputs": {
                "model_name": settings.model_name,
                "model_version": version,
                "code_sha": sha,
                "image_tag": tag,
                "request_id": request_id,
            },
        }
        log.info("CI: dispatching %s (request %s)", api.dispatch_url, request_id)
        api.request("POST", api.dispatch_url, json=body)
        run = _find_dispatched(api, request_id, started - _CLOCK_SKEW_S, deadline)
    return _wait_ci_run(api, run, deadline, build.ci_timeout_s)


def _find_dispatched(api: _CiApi, request_id: str, since: float, deadline: float) -> dict[str, Any]:
    while True:
        found = [r for r in api.runs(since) if _titled(r, request_id)]
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            raise StepError(
                f"no workflow run named with request id {request_id} appeared",
                subject="MLOPS_CI_DISPATCH_URL",
                fix="the workflow's run-name must contain inputs.image_tag and inputs.request_id "
                "(see deploy/ci/build-serving-image.yml); raise MLOPS_CI_TIMEOUT_S if CI is slow",
            )
        time.sleep(api.poll_s)


def _wait_ci_run(api: _CiApi, run: dict[str, Any], deadline: float, timeout_s: float) -> str:
    url = str(run.get("html_url") or f"{api.repo_url}/actions/runs/{run['id']}")
    while run.get("status") != "completed":
        if time.monotonic() >= deadline:
            raise StepError(
                f"the CI build did not finish within {timeout_s:g}s (status {run.get('status')})",
                subject=url,
                fix="look at the run; raise MLOPS_CI_TIMEOUT_S if builds are slow",
            )
        time.sleep(api.poll_s)
        run = api.run(int(run["id"]))
    if run.get("conclusion") != "success":
        raise StepError(
            f"the CI build ended with conclusion {run.get('conclusion')!r}",
            subject=url,
            fix="open the run's log, fix the build, and run the step again",
        )
    log.info("CI: build succeeded: %s", url)
    return url


# -- kaniko: a Job in the cluster -----------------------------------------------------------------


def pinned_context(context: str, code_sha: str) -> str:
    """A kaniko git context at exactly ``code_sha`` (``git://repo#ref#commit``); other contexts
    (a bucket or directory prepared for that commit) are used as given."""
    if not context.startswith("git://"):
        return context
    base, _, rest = context.partition("#")
    ref = rest.split("#", 1)[0] or "refs/heads/main"
    return f"{base}#{ref}#{code_sha}"


def kaniko_job_manifest(
    settings: Settings, *, model_name: str, version: str, code_sha: str, ref: str
) -> dict[str, Any]:
    """The ``batch/v1`` Job that builds and pushes ``ref``.

    kaniko unpacks the base image and runs the Dockerfile's ``RUN`` steps inside its own container,
    as root in that container: it cannot run as non-root. It gets no privilege escalation, no
    ServiceAccount token, the runtime's default seccomp profile and only the capabilities that
    unpacking files and ``useradd`` need. Push credentials come from a docker config Secret
    (``kubernetes.io/dockerconfigjson``) mounted at ``/kaniko/.docker/config.json``.
    """
    build, namespace = settings.image_build, settings.kubernetes.namespace
    name = kaniko_job_name(ref)
    labels = {
        "app.kubernetes.io/name": "serving-image-build",
        "app.kubernetes.io/part-of": "airflow-mlops",
        "app.kubernetes.io/component": "image-build",
        "mlops.airflow.apache.org/model-version": version,
    }
    annotations = {
        "mlops.airflow.apache.org/image-ref": ref,
        "mlops.airflow.apache.org/model-name": model_name,
        "mlops.airflow.apache.org/code-sha": code_sha,
    }
    args = [
        f"--context={pinned_context(build.build_context, code_sha)}",
        f"--dockerfile={SERVING_DOCKERFILE}",
        f"--destination={ref}",
        f"--build-arg=MLOPS_MODEL_NAME={model_name}",
        f"--build-arg=MLOPS_MODEL_VERSION={version}",
        f"--build-arg=MLOPS_CODE_SHA={code_sha}",
        "--snapshot-mode=redo",
        "--verbosity=info",
    ]
    container = {
        "name": KANIKO_CONTAINER,
        "image": build.kaniko_image,
        "args": args,
        "env": [{"name": "DOCKER_CONFIG", "value": "/kaniko/.docker"}],
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "4Gi"},
            "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"},
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {
                "drop": ["ALL"],
                "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID"],
            },
        },
        "volumeMounts": [
            {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True}
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 1,  # one retry for a flaky registry; a broken Dockerfile fails twice
            "activeDeadlineSeconds": int(build.kaniko_timeout_s),
            "ttlSecondsAfterFinished": 86_400,  # the registry tag records the build, not the Job
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "docker-config",
                            "secret": {
                                "secretName": build.kaniko_push_secret,
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                            },
                        }
                    ],
                },
            },
        },
    }


def _job_outcome(job: dict[str, Any]) -> tuple[str, str]:
    """("succeeded" | "failed" | "running", why)."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded", ""
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed", f"{condition.get('reason')}: {condition.get('message')}"
    if int(status.get("succeeded") or 0) > 0:
        return "succeeded", ""
    return "running", f"{int(status.get('active') or 0)} pod(s) active"


class _Kaniko:
    """Create-or-attach and wait for one build Job."""

    def __init__(self, settings: Settings, api_client: Any) -> None:
        from kubernetes import client

        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = settings.kubernetes.namespace
        self.service_account = settings.kubernetes.service_account
        self.timeout_s = settings.image_build.kaniko_timeout_s
        self.poll_s = KANIKO_POLL_S

    def _error(self, exc: Any, name: str, verb: str) -> Exception:
        return kubeapi.api_error(
            exc,
            f"job/{name} in namespace {self.namespace}",
            verb=verb,
            service_account=self.service_account,
        )

    def read(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.batch.read_namespaced_job_status(
                name,
                self.namespace,
                _preload_content=False,
                _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            raise self._error(exc, name, "get") from None
        return kubeapi.payload(response)

    def start(self, manifest: dict[str, Any]) -> None:
        """Create the Job; an existing one for the same image is attached to (a failed one is
        deleted and created again: a re-run after a fix must build)."""
        from kubernetes.client.exceptions import ApiException

        name, ref = manifest["metadata"]["name"], manifest["metadata"]["annotations"]
        for _ in range(30):
            try:
                self.batch.create_namespaced_job(
                    self.namespace,
                    manifest,
                    _preload_content=False,
                    _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                )
                log.info("kaniko: created job/%s", name)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise self._error(exc, name, "create") from None
            existing = self.read(name)
            annotations = existing.get("metadata", {}).get("annotations") or {}
            if annotations.get("mlops.airflow.apache.org/image-ref") != ref.get(
                "mlops.airflow.apache.org/image-ref"
            ):
                raise StepError(
                    "exists but builds another image",
                    subject=f"job/{name} in namespace {self.namespace}",
                    fix=f"delete it (kubectl -n {self.namespace} delete job {name})",
                )
            if existing.get("metadata", {}).get("deletionTimestamp"):
                time.sleep(min(self.poll_s, 2.0))  # a deleted Job still going away
                continue
            outcome, _ = _job_outcome(existing)
            if outcome != "failed":
                log.info("kaniko: attaching to job/%s (%s)", name, outcome)
                return
            log.info("kaniko: job/%s failed earlier; deleting it to build again", name)
            try:
                self.batch.delete_namespaced_job(
                    name,
                    self.namespace,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise self._error(exc, name, "delete") from None
        raise RuntimeError(f"job/{name} kept conflicting while being replaced; retry the step")

    def wait(self, name: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            outcome, why = _job_outcome(self.read(name))
            if outcome == "succeeded":
                log.info("kaniko: job/%s succeeded", name)
                return
            if outcome == "failed" or time.monotonic() >= deadline:
                if outcome != "failed":
                    why = f"not finished after {self.timeout_s:g}s ({why})"
                self._log_tail(name)
                raise StepError(
                    f"the kaniko build failed: {why}",
                    subject=f"job/{name} in namespace {self.namespace}",
                    fix=f"kubectl -n {self.namespace} logs job/{name}; check the push Secret "
                    "(MLOPS_KANIKO_PUSH_SECRET) and the build context (MLOPS_BUILD_CONTEXT)",
                )
            time.sleep(self.poll_s)

    def _log_tail(self, name: str) -> None:
        """Best effort: the end of the build log in the step's log."""
        from kubernetes.client.exceptions import ApiException

        try:
            pods = kubeapi.payload(
                self.core.list_namespaced_pod(
                    self.namespace,
                    label_selector=f"job-name={name}",
                    _preload_content=False,
                    _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                )
            )
            for pod in pods.get("items") or []:
                pod_name = pod["metadata"]["name"]
                text = self.core.read_namespaced_pod_log(
                    pod_name,
                    self.namespace,
                    container=KANIKO_CONTAINER,
                    tail_lines=30,
                    _preload_content=False,
                    _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                ).data.decode("utf-8", "replace")
                log.warning("kaniko log of pod %s (last lines):\n%s", pod_name, text)
        except (ApiException, OSError, ValueError, KeyError) as exc:
            log.warning("could not read the build log of job/%s: %s", name, exc)


def _build_kaniko(
    settings: Settings, version: str, sha: str, ref: str, api_client: Any = None
) -> str:
    manifest = kaniko_job_manifest(
        settings, model_name=settings.model_name, version=version, code_sha=sha, ref=ref
    )
    kaniko = _Kaniko(settings, api_client or kubeapi.api_client())
    name = manifest["metadata"]["name"]
    kaniko.start(manifest)
    kaniko.wait(name)
    return f"kubernetes:///apis/batch/v1/namespaces/{kaniko.namespace}/jobs/{name}"
