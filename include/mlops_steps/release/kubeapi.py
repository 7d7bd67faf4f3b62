"""The Kubernetes API as the release steps see it: one client, plain-dict objects, named errors.

Steps that touch the cluster (the kaniko image build, the Kubernetes deployment target) run in a
pod under the ``mlops-steps`` ServiceAccount (``deploy/k8s/rbac.yaml``), so the in-cluster
configuration comes first; a kubeconfig (``KUBECONFIG`` or ``~/.kube/config``) is the fallback for
a laptop or a CI runner. Objects are read and written as JSON dicts, not the generated models, so
what the code sends is exactly what the tests assert.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mlops_steps.core.errors import StepError

REQUEST_TIMEOUT_S = 30.0
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
# Custom resources (HTTPRoute, Rollout) take no strategic merge: a JSON merge patch replaces a
# list whole, so callers send every list they patch in full.
MERGE_PATCH = "application/merge-patch+json"
SERVING_PORT = 8000  # containerPort "http" of the serving pods (deploy/helm/mlops-serving)
DEPLOYMENT_SETTINGS = "MLOPS_K8S_NAMESPACE, MLOPS_STABLE_DEPLOYMENT, MLOPS_CANARY_DEPLOYMENT"


def api_client() -> Any:
    """A ``kubernetes.client.ApiClient``: in-cluster config first, then a kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # The client reads KUBECONFIG once, at import; read it at call time instead.
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError) as exc:
            raise StepError(
                "no Kubernetes credentials: not in a pod with a ServiceAccount token, and no "
                f"usable kubeconfig ({type(exc).__name__})",
                subject="KUBECONFIG",
                fix="run the step in the cluster under the mlops-steps ServiceAccount "
                "(deploy/k8s/rbac.yaml) or point KUBECONFIG at a kubeconfig",
            ) from None
    return client.ApiClient(configuration)


def payload(response: Any) -> dict[str, Any]:
    """The JSON body of a raw (``_preload_content=False``) response."""
    data: dict[str, Any] = json.loads(response.data or b"{}")
    return data


def api_error(
    exc: Any,
    subject: str,
    *,
    verb: str,
    service_account: str,
    settings: str = DEPLOYMENT_SETTINGS,
) -> Exception:
    """What an ``ApiException`` means: a StepError (exit 2) for what a retry cannot fix (refused,
    missing, invalid), a plain error (exit 1, retried by Airflow) for a server-side failure."""
    status = getattr(exc, "status", None)
    reason = ""
    try:
        reason = str(json.loads(exc.body or "{}").get("message", ""))[:300]
    except (TypeError, ValueError):
        reason = str(getattr(exc, "reason", ""))[:300]
    if status == 403:
        return StepError(
            f"the Kubernetes API refused to {verb} it (HTTP 403: {reason})",
            subject=subject,
            fix=f"bind the Role in deploy/k8s/rbac.yaml to the ServiceAccount {service_account}",
        )
    if status == 404:
        return StepError(
            f"does not exist (HTTP 404: {reason})",
            subject=subject,
            fix="apply the manifests (kubectl apply -f serving/k8s/, or the chart "
            f"deploy/helm/mlops-serving) or fix the name in the settings ({settings})",
        )
    if status is None or status == 429 or status >= 500:
        return RuntimeError(f"{subject}: Kubernetes API unavailable on {verb} (HTTP {status})")
    return StepError(
        f"the Kubernetes API rejected {verb} (HTTP {status}: {reason})", subject=subject
    )


def ready_pod_metrics_urls(
    core: Any, namespace: str, labels: dict[str, str], *, subject: str, service_account: str
) -> list[str]:
    """``/metrics`` of every ready pod matching ``labels`` (``core`` is a ``CoreV1Api``)."""
    from kubernetes.client.exceptions import ApiException

    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    try:
        pods = payload(
            core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        )
    except ApiException as exc:
        raise api_error(
            exc, f"pods of {subject}", verb="list", service_account=service_account
        ) from None
    urls = []
    for pod in pods.get("items", []):
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if ready and status.get("podIP"):
            urls.append(f"http://{status['podIP']}:{SERVING_PORT}/metrics")
    return urls


@dataclass(frozen=True)
class CustomObject:
    """One namespaced custom resource (an HTTPRoute, a Rollout), read and merge-patched as a
    dict through ``CustomObjectsApi``, with the errors of :func:`api_error`."""

    api: Any  # kubernetes.client.CustomObjectsApi
    group: str
    version: str
    plural: str
    namespace: str
    name: str
    service_account: str
    setting: str  # the setting that names it, for the "does not exist" fix

    @property
    def subject(self) -> str:
        return f"{self.plural}.{self.group}/{self.name} in namespace {self.namespace}"

    def _call(self, verb: str, method: Any, *body: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = method(
                self.group,
                self.version,
                self.namespace,
                self.plural,
                self.name,
                *body,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
                **({"_content_type": MERGE_PATCH} if body else {}),
            )
        except ApiException as exc:
            raise api_error(
                exc,
                self.subject,
                verb=verb,
                service_account=self.service_account,
                settings=f"MLOPS_K8S_NAMESPACE, {self.setting}",
            ) from None
        return payload(response)

    def read(self) -> dict[str, Any]:
        return self._call("get", self.api.get_namespaced_custom_object)

    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object (its spec and metadata)."""
        return self._call("patch", self.api.patch_namespaced_custom_object, body)

    def patch_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the ``status`` subresource (how ``kubectl argo rollouts``
        promotes and aborts)."""
        return self._call("patch status", self.api.patch_namespaced_custom_object_status, body)
