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
from typing import Any

from mlops_steps.core.errors import StepError

REQUEST_TIMEOUT_S = 30.0
STRATEGIC_MERGE = "application/strategic-merge-patch+json"


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


def api_error(exc: Any, subject: str, *, verb: str, service_account: str) -> Exception:
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
            fix="apply the manifests (kubectl apply -f serving/k8s/) or fix the name in the "
            "settings (MLOPS_K8S_NAMESPACE, MLOPS_STABLE_DEPLOYMENT, MLOPS_CANARY_DEPLOYMENT)",
        )
    if status is None or status == 429 or status >= 500:
        return RuntimeError(f"{subject}: Kubernetes API unavailable on {verb} (HTTP {status})")
    return StepError(
        f"the Kubernetes API rejected {verb} (HTTP {status}: {reason})", subject=subject
    )
