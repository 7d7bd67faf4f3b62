"""The ``kubernetes`` deployment target: the stable and canary Deployments of ``serving/k8s/``.

One Service selects the pods of both Deployments, so the canary's share of the traffic is its
share of the ready pods. For a requested weight ``w`` and ``S`` stable replicas the canary gets
``ceil(w * S / (1 - w))`` replicas, and the *effective* weight is ``canary / (S + canary)``: with
``S = 3`` a request for 0.1 gives one canary pod, i.e. 0.25 of the traffic. The effective weight
is never below the requested one; every method returns it in its :class:`TrafficState`. ``S`` is
the stable Deployment's replica count as read at the time (an autoscaler may have changed it);
``MLOPS_STABLE_REPLICAS`` only when the Deployment has none.

Each Deployment's pods serve the model named by ``SERVING_STABLE_ALIAS`` of the ``serving``
container. A release *pins the version number* there (and the image built for it), rather than
pointing at an alias: the release steps move the ``champion`` alias only after the traffic has
moved, a pod restarted later must come back on the same version as its siblings, and an alias
moved by hand in the registry must not silently change what a Deployment serves. The Deployment
spec is then the one record of what runs; the registry alias is the record of what should.

Patches are strategic merges touching only the replica count, the ``serving`` container's image,
that one env entry and two annotations (``mlops.airflow.apache.org/model-version`` and
``/image-ref``, on the Deployment and its pod template). Re-sending a patch the Deployment already
matches changes nothing (its generation does not move), so every method is idempotent. A rollout
that does not finish within ``MLOPS_ROLLOUT_TIMEOUT_S`` is undone by patching back what the
Deployment had before, so a failed call leaves the traffic as it was.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings
from mlops_steps.release import kubeapi
from mlops_steps.release.targets.base import Release, TrafficState

log = logging.getLogger("mlops_steps")

CONTAINER = "serving"
MODEL_REF_ENV = "SERVING_STABLE_ALIAS"
MODEL_NAME_ENV = "SERVING_MODEL_NAME"
VERSION_ANNOTATION = "mlops.airflow.apache.org/model-version"
IMAGE_ANNOTATION = "mlops.airflow.apache.org/image-ref"
_EPSILON = 1e-9


def canary_replicas(weight: float, stable_replicas: int) -> int:
    """Canary pods for ``weight`` of the traffic beside ``stable_replicas`` stable pods."""
    if not 0.0 <= weight < 1.0:
        raise StepError(
            f"{weight} is outside [0, 1): a canary beside a stable track cannot take all traffic",
            subject="canary weight",
            fix="use a weight below 1 (e.g. 0.1); promote the release to give it all traffic",
        )
    if weight == 0.0:
        return 0
    return max(1, math.ceil(weight * stable_replicas / (1.0 - weight) - _EPSILON))


def effective_weight(canary_pods: int, stable_pods: int) -> float:
    """The canary's share of the traffic when the Service spreads requests over ready pods."""
    total = canary_pods + stable_pods
    return canary_pods / total if total else 0.0


@dataclass(frozen=True)
class _Snapshot:
    """What a patch changes, as it was before, so a failed rollout can be patched back."""

    replicas: int
    image: str | None
    model_ref: str | None
    annotations: dict[str, str | None]
    template_annotations: dict[str, str | None]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    for container in deployment["spec"]["template"]["spec"].get("containers", []):
        if container.get("name") == CONTAINER:
            return dict(container)
    raise StepError(
        f"has no container named {CONTAINER!r}",
        subject=f"deployment/{deployment['metadata']['name']}",
        fix="deploy the manifests of serving/k8s/ (the container must be called serving)",
    )


def _env_value(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env") or []:
        if entry.get("name") == name:
            value = entry.get("value")
            return None if value is None else str(value)
    return None


def _pod_patch(
    version: str | None, image_ref: str | None, annotations: dict[str, str | None]
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": CONTAINER}
    if image_ref:
        container["image"] = image_ref
    if version is not None:
        container["env"] = [{"name": MODEL_REF_ENV, "value": version}]
    return {"metadata": {"annotations": annotations}, "spec": {"containers": [container]}}


def release_patch(release: Release, replicas: int | None) -> dict[str, Any]:
    """The strategic-merge patch that makes a Deployment serve ``release`` (the image is left
    as it is when the release has none, e.g. a champion registered before images were built)."""
    annotations: dict[str, str | None] = {VERSION_ANNOTATION: release.version}
    if release.image_ref:
        annotations[IMAGE_ANNOTATION] = release.image_ref
    spec: dict[str, Any] = {"template": _pod_patch(release.version, release.image_ref, annotations)}
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"metadata": {"annotations": annotations}, "spec": spec}


def replicas_patch(replicas: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}}


def _snapshot(deployment: dict[str, Any]) -> _Snapshot:
    container = _container(deployment)
    keys = (VERSION_ANNOTATION, IMAGE_ANNOTATION)
    own = deployment["metadata"].get("annotations") or {}
    pod = deployment["spec"]["template"].get("metadata", {}).get("annotations") or {}
    return _Snapshot(
        replicas=int(deployment["spec"].get("replicas") or 0),
        image=container.get("image"),
        model_ref=_env_value(container, MODEL_REF_ENV),
        annotations={k: own.get(k) for k in keys},  # None deletes an annotation that was absent
        template_annotations={k: pod.get(k) for k in keys},
    )


def _restore_patch(snapshot: _Snapshot) -> dict[str, Any]:
    template = _pod_patch(snapshot.model_ref, snapshot.image, snapshot.template_annotations)
    return {
        "metadata": {"annotations": snapshot.annotations},
        "spec": {"replicas": snapshot.replicas, "template": template},
    }


def rollout_progress(deployment: dict[str, Any]) -> str | None:
    """None when the rollout is complete, else what it is waiting for (as ``kubectl rollout
    status`` judges it: the spec observed, every pod updated, old pods gone, all available)."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    desired = int(spec.get("replicas") or 0)
    generation = int(deployment["metadata"].get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return "the controller has not observed the new spec yet"
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        return f"{updated} of {desired} pods updated"
    if total > updated:
        return f"{total - updated} old pods are still terminating"
    if available < desired:
        return f"{available} of {desired} updated pods available"
    return None


def _deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return str(condition.get("message") or "progress deadline exceeded")
    return None


def pinned_version(
    workload: dict[str, Any], resolve_alias: Callable[[str], str | None] | None
) -> str | None:
    """The version a workload's pods load (a Deployment, Rollout or ReplicaSet: its pod
    template): the pinned number, or what its alias names."""
    ref = _env_value(_container(workload), MODEL_REF_ENV)
    if not ref:
        return None
    if ref.isdigit():
        return ref
    if resolve_alias is None or ref.startswith("bundle:"):
        return None
    return resolve_alias(ref)


def _registry_alias_resolver(model_name: str) -> Callable[[str], str | None]:
    """Resolve an alias the way a serving pod does at start-up (the manifests as shipped point
    the stable track at ``champion`` until the first release pins a version)."""

    def resolve(alias: str) -> str | None:
        from mlops_steps.common.tracking import connect, version_by_alias

        version = version_by_alias(connect(), model_name, alias)
        return None if version is None else str(version.version)

    return resolve


@dataclass
class KubernetesTarget:
    """The stable and canary Deployments of one model in one namespace."""

    apps: Any  # kubernetes.client.AppsV1Api
    namespace: str
    stable_deployment: str
    canary_deployment: str
    model_name: str
    default_stable_replicas: int = 3
    rollout_timeout_s: float = 600.0
    poll_interval_s: float = 2.0
    service_account: str = "mlops-steps"
    resolve_alias: Callable[[str], str | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, api_client: Any = None) -> KubernetesTarget:
        from kubernetes import client

        deploy = settings.deploy
        return cls(
            apps=client.AppsV1Api(api_client or kubeapi.api_client()),
            namespace=settings.kubernetes.namespace,
            stable_deployment=deploy.stable_deployment,
            canary_deployment=deploy.canary_deployment,
            model_name=settings.model_name,
            default_stable_replicas=deploy.stable_replicas,
            rollout_timeout_s=deploy.rollout_timeout_s,
            service_account=settings.kubernetes.service_account,
            resolve_alias=_registry_alias_resolver(settings.model_name),
        )

    # -- the Kubernetes API -------------------------------------------------------------------

    def _subject(self, name: str) -> str:
        return f"deployment/{name} in namespace {self.namespace}"

    def _call(self, name: str, verb: str, method: Callable[..., Any], *args: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = method(
                name,
                self.namespace,
                *args,
                _preload_content=False,
                _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                **({"_content_type": kubeapi.STRATEGIC_MERGE} if args else {}),
            )
        except ApiException as exc:
            raise kubeapi.api_error(
                exc, self._subject(name), verb=verb, service_account=self.service_account
            ) from None
        return kubeapi.payload(response)

    def _read(self, name: str) -> dict[str, Any]:
        return self._call(name, "get", self.apps.read_namespaced_deployment)

    def _patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        log.info("patching %s: %s", self._subject(name), body)
        return self._call(name, "patch", self.apps.patch_namespaced_deployment, body)

    def _wait(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.rollout_timeout_s
        while True:
            deployment = self._read(name)
            waiting = rollout_progress(deployment)
            if waiting is None:
                return deployment
            stuck = _deadline_exceeded(deployment)
            if stuck or time.monotonic() >= deadline:
                why = stuck or f"not finished after {self.rollout_timeout_s:g}s"
                raise StepError(
                    f"rollout failed: {why} ({waiting})",
                    subject=self._subject(name),
                    fix=f"kubectl -n {self.namespace} rollout status deployment/{name}; check "
                    "the pods' events (image pull, /ready failing because the model does not "
                    "load); raise MLOPS_ROLLOUT_TIMEOUT_S for slow model loads",
                )
            time.sleep(self.poll_interval_s)

    def _apply(self, name: str, before: dict[str, Any], body: dict[str, Any]) -> None:
        """Patch and wait for the rollout; on failure patch back what was there and re-raise."""
        self._patch(name, body)
        try:
            self._wait(name)
        except Exception:
            log.warning("rollout of %s failed; restoring its previous spec", self._subject(name))
            try:
                self._patch(name, _restore_patch(_snapshot(before)))
            except Exception:  # the original error is the one to report
                log.exception("could not restore %s", self._subject(name))
            raise

    # -- what serves ----------------------------------------------------------------------------

    def _check_model(self, deployment: dict[str, Any], release: Release) -> None:
        serving = _env_value(_container(deployment), MODEL_NAME_ENV)
        if serving is not None and serving != release.model_name:
            raise StepError(
                f"serves model {serving!r}, not {release.model_name!r}",
                subject=self._subject(deployment["metadata"]["name"]),
                fix="set MLOPS_STABLE_DEPLOYMENT / MLOPS_CANARY_DEPLOYMENT to this model's "
                "Deployments",
            )

    def _version(self, deployment: dict[str, Any]) -> str | None:
        return pinned_version(deployment, self.resolve_alias)

    def _state_of(self, stable: dict[str, Any], canary: dict[str, Any]) -> TrafficState:
        canary_on = int(canary["spec"].get("replicas") or 0) > 0
        stable_ready = int((stable.get("status") or {}).get("readyReplicas") or 0)
        canary_ready = int((canary.get("status") or {}).get("readyReplicas") or 0)
        return TrafficState(
            stable_version=self._version(stable),
            canary_version=self._version(canary) if canary_on else None,
            canary_weight=effective_weight(canary_ready, stable_ready) if canary_on else 0.0,
        )

    def state(self) -> TrafficState:
        """Versions from the Deployments' specs; the weight from their ready pods (what the
        Service routes to right now)."""
        return self._state_of(
            self._read(self.stable_deployment), self._read(self.canary_deployment)
        )

    def metrics_urls(self) -> list[str]:
        """``/metrics`` of every ready pod of both Deployments (by their selectors)."""
        from kubernetes import client

        core = client.CoreV1Api(self.apps.api_client)
        urls: list[str] = []
        for name in (self.stable_deployment, self.canary_deployment):
            urls += kubeapi.ready_pod_metrics_urls(
                core,
                self.namespace,
                self._read(name)["spec"]["selector"].get("matchLabels", {}),
                subject=self._subject(name),
                service_account=self.service_account,
            )
        return urls

    # -- releases ---------------------------------------------------------------------------------

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        """Canary pods on ``release`` at ``weight``. A weight of 1 is only accepted while nothing
        serves on the stable track (the first release): the canary then gets ``S`` pods."""
        stable = self._read(self.stable_deployment)
        canary = self._read(self.canary_deployment)
        self._check_model(canary, release)
        stable_replicas = int(stable["spec"].get("replicas") or 0) or self.default_stable_replicas
        if weight == 1.0 and self._state_of(stable, canary).stable_version is None:
            replicas = stable_replicas
        else:
            replicas = canary_replicas(weight, stable_replicas)
        log.info(
            "canary v%s: %d pods beside %d stable (requested %.3f, effective %.3f)",
            release.version,
            replicas,
            stable_replicas,
            weight,
            effective_weight(replicas, stable_replicas),
        )
        self._apply(self.canary_deployment, canary, release_patch(release, replicas))
        return self.state()

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        raise StepError(
            f"cannot mirror {share:.0%} of the requests to v{release.version}: the replica "
            "split answers every request it routes to a canary pod",
            subject="shadow mode on the kubernetes target",
            fix="route through a Gateway API HTTPRoute (MLOPS_K8S_TRAFFIC=gateway-api), or run "
            "the release without shadow (shadow_share 0)",
        )

    def promote(self, release: Release) -> TrafficState:
        """Stable pods on ``release`` (pinned version, its image), then the canary to 0."""
        stable = self._read(self.stable_deployment)
        self._check_model(stable, release)
        self._apply(self.stable_deployment, stable, release_patch(release, None))
        canary = self._read(self.canary_deployment)
        self._apply(self.canary_deployment, canary, replicas_patch(0))
        return self.state()

    def rollback(self, stable: Release | None) -> TrafficState:
        """Canary to 0 first (the candidate's traffic goes at once), then, if ``stable`` names
        another version or image than the stable Deployment runs, the stable pods back to it."""
        canary = self._read(self.canary_deployment)
        self._apply(self.canary_deployment, canary, replicas_patch(0))
        if stable is not None:
            current = self._read(self.stable_deployment)
            self._check_model(current, stable)
            container = _container(current)
            differs = _env_value(container, MODEL_REF_ENV) != stable.version or bool(
                stable.image_ref and container.get("image") != stable.image_ref
            )
            if differs:
                self._apply(self.stable_deployment, current, release_patch(stable, None))
        return self.state()
