"""The ``kubernetes`` target with ``MLOPS_K8S_TRAFFIC=argo-rollouts``: one Argo ``Rollout``.

The model's ``Rollout`` (``argoproj.io/v1alpha1``, ``MLOPS_ROLLOUT``) replaces the stable and
canary Deployments. A release pins its version and image in the Rollout's pod template (the
``serving`` container's ``SERVING_STABLE_ALIAS`` and image, and the two
``mlops.airflow.apache.org/`` annotations, as on the Deployments); Argo Rollouts runs it as the
canary ReplicaSet beside the stable one. The target drives the canary strategy itself: every
traffic step sets ``spec.strategy.canary.steps`` to ``[{setWeight: w}, {pause: {}}]``, which the
controller, seeing new steps, runs from the first again (set the weight, then wait for us).
Weights are whole percents, rounded as :func:`.gateway.weight_percent` says.

Promotion and rollback are what ``kubectl argo rollouts`` sends (merge patches of the ``status``
subresource): ``promote --full`` is ``{"status": {"promoteFull": true}}`` (and
``spec.paused: false`` when paused by hand), ``abort`` is ``{"status": {"abort": true}}``. After an
abort the target also puts the stable ReplicaSet's template back (``undo``), which Argo Rollouts
recognises as the stable one and finishes at once. The state is read from the Rollout's status:
``stableRS`` and ``currentPodHash`` name the two ReplicaSets (``<rollout>-<hash>``), the weight is
``status.canary.weights`` under a traffic router, else the share of available pods.

Argo Rollouts mirrors requests only through a traffic-router plugin, so shadow mode is refused:
``MLOPS_K8S_TRAFFIC=gateway-api`` mirrors.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings
from mlops_steps.release import kubeapi
from mlops_steps.release.targets.base import Release, TrafficState
from mlops_steps.release.targets.gateway import weight_percent
from mlops_steps.release.targets.kubernetes import (
    CONTAINER,
    IMAGE_ANNOTATION,
    MODEL_NAME_ENV,
    MODEL_REF_ENV,
    VERSION_ANNOTATION,
    _container,
    _env_value,
    _registry_alias_resolver,
    pinned_version,
)

log = logging.getLogger("mlops_steps")

PROMOTE_FULL = {"status": {"promoteFull": True}}  # kubectl argo rollouts promote --full
ABORT = {"status": {"abort": True}}  # kubectl argo rollouts abort
RETRY = {"status": {"abort": False}}  # kubectl argo rollouts retry rollout
_KEYS = (VERSION_ANNOTATION, IMAGE_ANNOTATION)


def canary_steps(percent: int) -> list[dict[str, Any]]:
    """The steps the controller runs for one traffic step: set the weight, then wait for us."""
    return [{"setWeight": percent}, {"pause": {}}]


def template_patch(rollout: dict[str, Any], release: Release) -> dict[str, Any]:
    """The merge patch pinning ``release`` in the pod template. A merge patch replaces lists, so
    the containers go whole, with only the ``serving`` container's image and model entry changed
    (the image is left as it is when the release has none)."""
    containers = copy.deepcopy(rollout["spec"]["template"]["spec"]["containers"])
    serving = next(c for c in containers if c.get("name") == CONTAINER)
    if release.image_ref:
        serving["image"] = release.image_ref
    env = serving.setdefault("env", [])
    entry = next((e for e in env if e.get("name") == MODEL_REF_ENV), None)
    if entry is None:
        env.append({"name": MODEL_REF_ENV, "value": release.version})
    else:
        entry.clear()
        entry.update({"name": MODEL_REF_ENV, "value": release.version})
    annotations = {VERSION_ANNOTATION: release.version}
    if release.image_ref:
        annotations[IMAGE_ANNOTATION] = release.image_ref
    template = {"metadata": {"annotations": annotations}, "spec": {"containers": containers}}
    return {"metadata": {"annotations": annotations}, "spec": {"template": template}}


def restore_patch(before: dict[str, Any], template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merge patch putting back the pinned release of ``before`` (a Rollout), or of
    ``template`` (a ReplicaSet's pod template: ``undo``), and ``before``'s steps."""
    source = template if template is not None else before["spec"]["template"]
    own = before["metadata"].get("annotations") or {}
    pod = (source.get("metadata") or {}).get("annotations") or {}
    patch_template = {
        "metadata": {"annotations": {key: pod.get(key) for key in _KEYS}},
        "spec": {"containers": copy.deepcopy(source["spec"]["containers"])},
    }
    spec: dict[str, Any] = {"template": patch_template}
    if template is None:
        spec["strategy"] = {"canary": {"steps": _steps(before)}}
    annotations = {key: (pod if template is not None else own).get(key) for key in _KEYS}
    return {"metadata": {"annotations": annotations}, "spec": spec}


def _steps(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((rollout["spec"].get("strategy") or {}).get("canary") or {}).get("steps") or [])


def _pins(workload: dict[str, Any], release: Release) -> bool:
    container = _container(workload)
    return _env_value(container, MODEL_REF_ENV) == release.version and not (
        release.image_ref and container.get("image") != release.image_ref
    )


def _observed(rollout: dict[str, Any]) -> bool:
    status = rollout.get("status") or {}
    return str(status.get("observedGeneration")) == str(rollout["metadata"].get("generation"))


def _canary_running(rollout: dict[str, Any]) -> bool:
    status = rollout.get("status") or {}
    stable, current = status.get("stableRS"), status.get("currentPodHash")
    return bool(stable and current and stable != current)


def paused_at_our_step(rollout: dict[str, Any]) -> str | None:
    """None once the controller set the weight and waits at our pause step, else why not."""
    status = rollout.get("status") or {}
    if not _observed(rollout):
        return "the controller has not observed the new spec yet"
    if status.get("abort"):
        return "the rollout is aborted"
    if int(status.get("currentStepIndex") or 0) < 1:
        return f"the canary pods are not available yet ({status.get('message') or 'setWeight'})"
    return None


def fully_promoted(rollout: dict[str, Any]) -> str | None:
    """None once the current template is the stable ReplicaSet and healthy, else why not."""
    status = rollout.get("status") or {}
    if not _observed(rollout):
        return "the controller has not observed the new spec yet"
    if _canary_running(rollout) or not status.get("stableRS"):
        return f"stable is {status.get('stableRS')}, the template {status.get('currentPodHash')}"
    if status.get("phase") != "Healthy":
        return f"phase {status.get('phase')}: {status.get('message') or ''}".strip()
    return None


@dataclass
class RolloutTarget:
    """One model's Argo Rollouts ``Rollout`` in one namespace."""

    rollout: kubeapi.CustomObject
    apps: Any  # kubernetes.client.AppsV1Api: the Rollout's ReplicaSets
    model_name: str
    rollout_timeout_s: float = 600.0
    poll_interval_s: float = 2.0
    resolve_alias: Callable[[str], str | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, api_client: Any = None) -> RolloutTarget:
        from kubernetes import client

        api = api_client or kubeapi.api_client()
        rollout = kubeapi.CustomObject(
            api=client.CustomObjectsApi(api),
            group="argoproj.io",
            version="v1alpha1",
            plural="rollouts",
            namespace=settings.kubernetes.namespace,
            name=settings.deploy.rollout,
            service_account=settings.kubernetes.service_account,
            setting="MLOPS_ROLLOUT",
        )
        return cls(
            rollout=rollout,
            apps=client.AppsV1Api(api),
            model_name=settings.model_name,
            rollout_timeout_s=settings.deploy.rollout_timeout_s,
            resolve_alias=_registry_alias_resolver(settings.model_name),
        )

    # -- the Kubernetes API -------------------------------------------------------------------

    def _replica_set(self, pod_hash: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        name = f"{self.rollout.name}-{pod_hash}"  # how Argo Rollouts names them
        try:
            return kubeapi.payload(
                self.apps.read_namespaced_replica_set(
                    name,
                    self.rollout.namespace,
                    _preload_content=False,
                    _request_timeout=kubeapi.REQUEST_TIMEOUT_S,
                )
            )
        except ApiException as exc:
            raise kubeapi.api_error(
                exc,
                f"replicaset/{name} in namespace {self.rollout.namespace}",
                verb="get",
                service_account=self.rollout.service_account,
                settings="MLOPS_ROLLOUT",
            ) from None

    def _wait(self, why_not: Callable[[dict[str, Any]], str | None], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.rollout_timeout_s
        while True:
            rollout = self.rollout.read()
            waiting = why_not(rollout)
            if waiting is None:
                return rollout
            status = rollout.get("status") or {}
            degraded = status.get("phase") == "Degraded" and not status.get("abort")
            if degraded or time.monotonic() >= deadline:
                why = (
                    f"degraded: {status.get('message')}"
                    if degraded
                    else f"not done after {self.rollout_timeout_s:g}s"
                )
                raise StepError(
                    f"{what} failed: {why} ({waiting})",
                    subject=self.rollout.subject,
                    fix=f"kubectl argo rollouts -n {self.rollout.namespace} get rollout "
                    f"{self.rollout.name}; check the pods' events (image pull, /ready failing "
                    "because the model does not load); raise MLOPS_ROLLOUT_TIMEOUT_S for slow "
                    "model loads",
                )
            time.sleep(self.poll_interval_s)

    def _check_model(self, rollout: dict[str, Any], release: Release) -> None:
        serving = _env_value(_container(rollout), MODEL_NAME_ENV)
        if serving is not None and serving != release.model_name:
            raise StepError(
                f"serves model {serving!r}, not {release.model_name!r}",
                subject=self.rollout.subject,
                fix="set MLOPS_ROLLOUT to this model's Rollout",
            )

    # -- what serves ----------------------------------------------------------------------------

    def _weight(self, rollout: dict[str, Any], stable_rs: dict[str, Any]) -> float:
        status = rollout.get("status") or {}
        if status.get("abort"):
            return 0.0
        weights = (status.get("canary") or {}).get("weights")
        if weights:  # a traffic router sets exactly this share
            return int(weights["canary"]["weight"]) / 100
        canary_rs = self._replica_set(status["currentPodHash"])
        canary = int((canary_rs.get("status") or {}).get("availableReplicas") or 0)
        stable = int((stable_rs.get("status") or {}).get("availableReplicas") or 0)
        return canary / (canary + stable) if canary + stable else 0.0

    def state(self) -> TrafficState:
        rollout = self.rollout.read()
        template_version = pinned_version(rollout, self.resolve_alias)
        if not _canary_running(rollout):
            return TrafficState(template_version, None, 0.0)
        stable_rs = self._replica_set(rollout["status"]["stableRS"])
        return TrafficState(
            stable_version=pinned_version(stable_rs, self.resolve_alias),
            canary_version=template_version,
            canary_weight=self._weight(rollout, stable_rs),
        )

    def metrics_urls(self) -> list[str]:
        """``/metrics`` of every ready pod of the Rollout (stable and canary ReplicaSets)."""
        from kubernetes import client

        return kubeapi.ready_pod_metrics_urls(
            client.CoreV1Api(self.apps.api_client),
            self.rollout.namespace,
            self.rollout.read()["spec"]["selector"].get("matchLabels", {}),
            subject=self.rollout.subject,
            service_account=self.rollout.service_account,
        )

    # -- releases -------------------------------------------------------------------------------

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        """``release`` in the pod template (when it is not there yet) and the steps set to
        ``weight``, in one patch; then wait for the controller to pause at our step. A step that
        does not get there is undone: the previous template and steps are patched back."""
        before = self.rollout.read()
        self._check_model(before, release)
        first = weight == 1.0 and self.state().stable_version is None
        percent = weight_percent(weight, allow_all=first)
        patch: dict[str, Any] = {} if _pins(before, release) else template_patch(before, release)
        patch.setdefault("spec", {})["strategy"] = {"canary": {"steps": canary_steps(percent)}}
        log.info("rollout %s: v%s at %d%%", self.rollout.subject, release.version, percent)
        self.rollout.patch(patch)
        if (before.get("status") or {}).get("abort") and _pins(before, release):
            self.rollout.patch_status(RETRY)  # the same release again after an abort
        try:
            self._wait(paused_at_our_step, f"canary step to {percent}%")
        except Exception:
            log.warning("%s did not reach the step; restoring it", self.rollout.subject)
            try:
                self.rollout.patch(restore_patch(before))
            except Exception:  # the original error is the one to report
                log.exception("could not restore %s", self.rollout.subject)
            raise
        return self.state()

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        raise StepError(
            f"cannot mirror {share:.0%} of the requests to v{release.version}: Argo Rollouts "
            "mirrors only through a traffic-router plugin, which this target does not drive",
            subject="shadow mode on the kubernetes target (argo-rollouts)",
            fix="route through a Gateway API HTTPRoute (MLOPS_K8S_TRAFFIC=gateway-api), or run "
            "the release without shadow (shadow_share 0)",
        )

    def _promote_current(self) -> None:
        """``kubectl argo rollouts promote --full`` once the controller saw the template."""
        rollout = self._wait(lambda r: None if _observed(r) else "not observed", "update")
        if not _canary_running(rollout):
            return
        if rollout["spec"].get("paused"):
            self.rollout.patch({"spec": {"paused": False}})
        self.rollout.patch_status(PROMOTE_FULL)

    def promote(self, release: Release) -> TrafficState:
        """``release`` (normally the canary already) to stable at 100 %: a full promotion."""
        rollout = self.rollout.read()
        self._check_model(rollout, release)
        if not _pins(rollout, release):
            self.rollout.patch(template_patch(rollout, release))
        self._promote_current()
        self._wait(fully_promoted, "promotion")
        return self.state()

    def rollback(self, stable: Release | None) -> TrafficState:
        """Abort (the canary's traffic goes back to stable at once), then the template back to
        ``stable`` (or to what the stable ReplicaSet runs when None), promoted in full when it
        is not the stable ReplicaSet's."""
        rollout = self.rollout.read()
        status = rollout.get("status") or {}
        if _canary_running(rollout) and not status.get("abort"):
            self.rollout.patch_status(ABORT)
        if stable is not None:
            self._check_model(rollout, stable)
            if not _pins(rollout, stable):
                self.rollout.patch(template_patch(rollout, stable))
        elif _canary_running(rollout):
            stable_rs = self._replica_set(status["stableRS"])
            self.rollout.patch(restore_patch(rollout, stable_rs["spec"]["template"]))
        self._promote_current()
        self._wait(fully_promoted, "rollback")
        return self.state()
