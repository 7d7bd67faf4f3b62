"""The ``kaniko`` builder: a ``batch/v1`` Job in the cluster, through the Kubernetes API.

The Job runs the kaniko executor on ``serving/Dockerfile`` from the git context pinned to the code
sha and pushes with the docker config Secret ``MLOPS_KANIKO_PUSH_SECRET``. Its name derives from
the reference (:func:`kaniko_job_name`), so a second build of the same tag attaches to the running
Job (HTTP 409) instead of starting another; a failed Job of that name is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings
from mlops_steps.release import kubeapi
from mlops_steps.release.builders.base import BuildRequest, Built, utc_now

log = logging.getLogger("mlops_steps")

SERVING_DOCKERFILE = "serving/Dockerfile"
KANIKO_CONTAINER = "kaniko"
KANIKO_POLL_S = 5.0
IMAGE_REF_ANNOTATION = "mlops.airflow.apache.org/image-ref"

_DNS_INVALID = re.compile(r"[^a-z0-9-]")


def kaniko_job_name(ref: str) -> str:
    """A DNS-1123 Job name from the reference: readable tag plus a hash of the whole reference
    (two repositories may share a tag), at most 63 characters (the ``job-name`` pod label)."""
    tag = ref.rsplit(":", 1)[-1].lower()
    digest = hashlib.sha256(ref.encode()).hexdigest()[:8]
    stem = _DNS_INVALID.sub("-", f"build-serving-{tag}")[: 63 - 9].strip("-")
    return f"{stem}-{digest}"


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
        IMAGE_REF_ANNOTATION: ref,
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


class _BuildJobs:
    """Create-or-attach and wait for the build Jobs of the step's namespace."""

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

        name = manifest["metadata"]["name"]
        ref = manifest["metadata"]["annotations"][IMAGE_REF_ANNOTATION]
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
            if annotations.get(IMAGE_REF_ANNOTATION) != ref:
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


class KanikoBuilder:
    """Builds in the cluster the kubeconfig (or the pod's ServiceAccount) points at."""

    remote = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, request: BuildRequest) -> Built:
        manifest = kaniko_job_manifest(
            self.settings,
            model_name=request.model_name,
            version=request.version,
            code_sha=request.code_sha,
            ref=request.ref,
        )
        jobs = _BuildJobs(self.settings, kubeapi.api_client())
        name = manifest["metadata"]["name"]
        jobs.start(manifest)
        jobs.wait(name)
        url = f"kubernetes:///apis/batch/v1/namespaces/{jobs.namespace}/jobs/{name}"
        return Built(built_now=True, built_at=utc_now(), build_url=url)
