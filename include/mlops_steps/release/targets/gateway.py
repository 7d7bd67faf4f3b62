"""The ``kubernetes`` target with ``MLOPS_K8S_TRAFFIC=gateway-api``: weights on a Gateway API route.

The stable and canary Deployments stay as in the replica split (same pinning, same patches, see
:mod:`.kubernetes`), but each has its own Service of the same name, and the model's
``HTTPRoute`` (``gateway.networking.k8s.io/v1``, ``MLOPS_HTTP_ROUTE``) splits the requests between
the two with ``backendRefs`` weights. Weights are whole percents: a share ``w`` becomes
``round(100 w)`` for the canary (at least 1 when ``w > 0``, at most 99 when ``w < 1``) and the
rest for stable, so 0.05 gives exactly 5/95 and 0.333 gives 33/67; the state reports the
effective ``percent / 100``. Shadow mode adds a ``RequestMirror`` filter with ``percent`` (in the
standard channel since Gateway API v1.3.0; the route then needs v1.3+ CRDs) copying that share of
the requests to the canary Service, whose answers the gateway discards.

The canary Deployment gets ``ceil(share * S)`` pods (at least 1) for ``S`` stable pods, so it can
carry the share. The route is merge-patched whole-rule (a merge patch replaces lists), built from
the route as read, touching only the weights and the mirror filter of the rules that send to the
stable Service; re-sending it changes nothing. After each patch the target waits until every
parent Gateway has accepted the route's new generation, and patches the previous rules back when
that does not happen within ``MLOPS_ROLLOUT_TIMEOUT_S``.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings
from mlops_steps.release import kubeapi
from mlops_steps.release.targets.base import Release, TrafficState
from mlops_steps.release.targets.kubernetes import (
    MODEL_REF_ENV,
    KubernetesTarget,
    _container,
    _env_value,
    release_patch,
    replicas_patch,
)

log = logging.getLogger("mlops_steps")

MIRROR = "RequestMirror"


def weight_percent(weight: float, *, allow_all: bool = False) -> int:
    """A traffic share as the whole percent a route or a Rollout step takes (rounded to the
    nearest, never 0 for a positive share nor 100 for a share below 1)."""
    if not 0.0 <= weight <= 1.0 or (weight == 1.0 and not allow_all):
        raise StepError(
            f"{weight} is outside [0, 1): a canary beside a stable track cannot take all traffic",
            subject="canary weight",
            fix="use a weight below 1 (e.g. 0.1); promote the release to give it all traffic",
        )
    if weight in (0.0, 1.0):
        return int(weight * 100)
    return min(99, max(1, round(weight * 100)))


def canary_pods(share: float, stable_replicas: int) -> int:
    """Pods the canary needs to carry ``share`` of what ``stable_replicas`` pods carry."""
    return max(1, math.ceil(share * stable_replicas - 1e-9))


@dataclass(frozen=True)
class RouteSplit:
    """The canary's whole-percent share of the answers and of the mirrored copies."""

    canary_percent: int
    mirror_percent: int


def _is_service(ref: dict[str, Any], name: str) -> bool:
    return (
        ref.get("name") == name
        and ref.get("kind", "Service") == "Service"
        and (ref.get("group", "") in ("", "core"))
    )


def _mirrors_to(rule_filter: dict[str, Any], service: str) -> bool:
    mirror = rule_filter.get("requestMirror") or {}
    target = mirror.get("backendRef") or {}
    return rule_filter.get("type") == MIRROR and _is_service(target, service)


@dataclass(frozen=True)
class RouteBackends:
    """The route's stable and canary Services (the Deployments' names, as the chart renders)."""

    stable: str
    canary: str

    def _routed(self, route: dict[str, Any]) -> list[dict[str, Any]]:
        rules = [r for r in route["spec"].get("rules") or [] if self._stable_ref(r) is not None]
        if not rules:
            raise StepError(
                f"no rule of the route sends to the Service {self.stable!r}",
                subject=f"httproute/{route['metadata']['name']}",
                fix="render the route with deploy/helm/mlops-serving (trafficMode gateway-api), "
                "or set MLOPS_STABLE_DEPLOYMENT to the stable Service's name",
            )
        return rules

    def _stable_ref(self, rule: dict[str, Any]) -> dict[str, Any] | None:
        return next((r for r in rule.get("backendRefs") or [] if _is_service(r, self.stable)), None)

    def split(self, route: dict[str, Any]) -> RouteSplit:
        """The split of the first rule sending to stable (the target keeps all such rules alike)."""
        rule = self._routed(route)[0]
        weights = {ref.get("name"): int(ref.get("weight", 1)) for ref in rule["backendRefs"]}
        total = weights.get(self.stable, 0) + weights.get(self.canary, 0)
        canary = round(100 * weights.get(self.canary, 0) / total) if total else 0
        mirrors = [f for f in rule.get("filters") or [] if _mirrors_to(f, self.canary)]
        mirror = int(mirrors[0]["requestMirror"].get("percent", 100)) if mirrors else 0
        return RouteSplit(canary, mirror)

    def rules(self, route: dict[str, Any], split: RouteSplit) -> list[dict[str, Any]]:
        """The route's rules with ``split`` on every rule that sends to stable."""
        rules = copy.deepcopy(route["spec"].get("rules") or [])
        self._routed(route)  # fails closed when no rule sends to stable
        for rule in rules:
            stable_ref = self._stable_ref(rule)
            if stable_ref is None:
                continue
            others = [
                r
                for r in rule["backendRefs"]
                if not (_is_service(r, self.stable) or _is_service(r, self.canary))
            ]
            if others:
                raise StepError(
                    f"a rule sends to {others[0].get('name')!r} beside stable and canary",
                    subject=f"httproute/{route['metadata']['name']}",
                    fix="keep only the model's stable and canary Services in its rules",
                )
            port = stable_ref.get("port")
            canary_ref = {**stable_ref, "name": self.canary}
            rule["backendRefs"] = [
                {**stable_ref, "weight": 100 - split.canary_percent},
                {**canary_ref, "weight": split.canary_percent},
            ]
            filters = [f for f in rule.get("filters") or [] if not _mirrors_to(f, self.canary)]
            if split.mirror_percent:
                target = {"name": self.canary, **({"port": port} if port is not None else {})}
                filters.append(
                    {
                        "type": MIRROR,
                        "requestMirror": {"backendRef": target, "percent": split.mirror_percent},
                    }
                )
            if filters:
                rule["filters"] = filters
            else:
                rule.pop("filters", None)
        return rules


def route_accepted(route: dict[str, Any]) -> str | None:
    """None when every parent Gateway accepted the route's current generation, else why not."""
    generation = int(route["metadata"].get("generation") or 0)
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return "no Gateway has reported on the route yet"
    for parent in parents:
        ref = (parent.get("parentRef") or {}).get("name")
        for kind in ("Accepted", "ResolvedRefs"):
            conditions: list[dict[str, Any]] = parent.get("conditions") or []
            condition = next((c for c in conditions if c["type"] == kind), {})
            if int(condition.get("observedGeneration") or 0) < generation:
                return f"Gateway {ref} has not observed generation {generation} yet"
            if condition.get("status") != "True":
                return f"Gateway {ref}: {kind} is {condition.get('reason')}: " + str(
                    condition.get("message", "")
                )
    return None


@dataclass
class GatewayTarget:
    """The model's Deployments (as the replica split patches them) and its HTTPRoute."""

    deployments: KubernetesTarget
    route: kubeapi.CustomObject
    backends: RouteBackends

    @classmethod
    def from_settings(cls, settings: Settings, api_client: Any = None) -> GatewayTarget:
        from kubernetes import client

        api = api_client or kubeapi.api_client()
        deployments = KubernetesTarget.from_settings(settings, api)
        route = kubeapi.CustomObject(
            api=client.CustomObjectsApi(api),
            group="gateway.networking.k8s.io",
            version="v1",
            plural="httproutes",
            namespace=settings.kubernetes.namespace,
            name=settings.deploy.http_route,
            service_account=settings.kubernetes.service_account,
            setting="MLOPS_HTTP_ROUTE",
        )
        backends = RouteBackends(deployments.stable_deployment, deployments.canary_deployment)
        return cls(deployments, route, backends)

    # -- the route ------------------------------------------------------------------------------

    def _wait_route(self) -> None:
        deadline = time.monotonic() + self.deployments.rollout_timeout_s
        while (waiting := route_accepted(self.route.read())) is not None:
            if time.monotonic() >= deadline:
                raise StepError(
                    f"route not programmed after {self.deployments.rollout_timeout_s:g}s: "
                    f"{waiting}",
                    subject=self.route.subject,
                    fix=f"kubectl -n {self.route.namespace} describe httproute {self.route.name}: "
                    "check the parent Gateway, its controller and the backend Services",
                )
            time.sleep(self.deployments.poll_interval_s)

    def _route_to(self, split: RouteSplit) -> None:
        """Patch every rule to ``split`` and wait for the Gateways; on failure patch back."""
        before = self.route.read()
        log.info(
            "route %s: canary %d%%, mirror %d%%",
            self.route.subject,
            split.canary_percent,
            split.mirror_percent,
        )
        self.route.patch({"spec": {"rules": self.backends.rules(before, split)}})
        try:
            self._wait_route()
        except Exception:
            log.warning("%s was not programmed; restoring its previous rules", self.route.subject)
            try:
                self.route.patch({"spec": {"rules": before["spec"].get("rules") or []}})
            except Exception:  # the original error is the one to report
                log.exception("could not restore %s", self.route.subject)
            raise

    # -- what serves ----------------------------------------------------------------------------

    def state(self) -> TrafficState:
        """Versions from the Deployments' specs, the shares from the route's first stable rule."""
        split = self.backends.split(self.route.read())
        stable = self.deployments._read(self.deployments.stable_deployment)
        canary = self.deployments._read(self.deployments.canary_deployment)
        canary_on = int(canary["spec"].get("replicas") or 0) > 0
        return TrafficState(
            stable_version=self.deployments._version(stable),
            canary_version=self.deployments._version(canary) if canary_on else None,
            canary_weight=split.canary_percent / 100,
            shadow_share=split.mirror_percent / 100,
        )

    def metrics_urls(self) -> list[str]:
        return self.deployments.metrics_urls()

    # -- releases -------------------------------------------------------------------------------

    def _run_canary(self, release: Release, share: float, split: RouteSplit) -> TrafficState:
        deployments = self.deployments
        stable = deployments._read(deployments.stable_deployment)
        canary = deployments._read(deployments.canary_deployment)
        deployments._check_model(canary, release)
        stable_replicas = int(stable["spec"].get("replicas") or 0)
        pods = canary_pods(share, stable_replicas or deployments.default_stable_replicas)
        current = self.backends.split(self.route.read())
        container = _container(canary)
        other_release = _env_value(container, MODEL_REF_ENV) != release.version or bool(
            release.image_ref and container.get("image") != release.image_ref
        )
        if other_release and (current.canary_percent or current.mirror_percent):
            # The canary pods are about to change release: they take nothing meanwhile.
            self._route_to(RouteSplit(0, 0))
        patch = release_patch(release, pods)
        if not other_release and pods < int(canary["spec"].get("replicas") or 0):
            self._route_to(split)  # a smaller share first, then fewer pods
            deployments._apply(deployments.canary_deployment, canary, patch)
        else:
            deployments._apply(deployments.canary_deployment, canary, patch)
            self._route_to(split)  # pods first, then the share
        return self.state()

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        """Canary pods on ``release``, then ``weight`` of the route's answers to them (all of it
        only for a first release, when no stable version serves)."""
        first = weight == 1.0 and self.state().stable_version is None
        percent = weight_percent(weight, allow_all=first)
        return self._run_canary(release, percent / 100, RouteSplit(percent, 0))

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        """Canary pods on ``release`` answering nobody: the route mirrors ``share`` to them."""
        percent = weight_percent(share)
        if percent == 0:
            raise StepError(
                "a shadow share of 0 mirrors nothing",
                subject="shadow share",
                fix="use a share in (0, 1), e.g. 0.1",
            )
        return self._run_canary(release, percent / 100, RouteSplit(0, percent))

    def promote(self, release: Release) -> TrafficState:
        """Stable pods on ``release``, then the route all to stable, then the canary to 0."""
        deployments = self.deployments
        stable = deployments._read(deployments.stable_deployment)
        deployments._check_model(stable, release)
        deployments._apply(deployments.stable_deployment, stable, release_patch(release, None))
        self._route_to(RouteSplit(0, 0))
        canary = deployments._read(deployments.canary_deployment)
        deployments._apply(deployments.canary_deployment, canary, replicas_patch(0))
        return self.state()

    def rollback(self, stable: Release | None) -> TrafficState:
        """The route all to stable and no mirror first (the candidate's traffic goes at once),
        then the Deployments as the replica split rolls back (canary to 0, stable re-pinned)."""
        self._route_to(RouteSplit(0, 0))
        self.deployments.rollback(stable)
        return self.state()
