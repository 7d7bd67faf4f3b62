"""The loopback Kubernetes API of tests/fake_apis.py plus the two custom resources the traffic
modes patch: a Gateway API HTTPRoute (merge patches; every parent Gateway accepts each new
generation at once unless told not to) and an Argo Rollouts Rollout with a small stand-in for its
controller (canary steps, pause, ``promoteFull`` and ``abort`` through the status subresource,
ReplicaSets named ``<rollout>-<pod hash>``). Every object is checked against its vendored CRD
schema after each patch and a patch that breaks it is refused with 422, as the API server does."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from tests.deploy.test_helm_chart import crd_schema
from tests.fake_apis import FakeKubernetes, Recorded, _status

MERGE_PATCH = "application/merge-patch+json"


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 (in place): null deletes, objects merge, everything else (lists too) replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            existing = target.get(key)
            target[key] = merge_patch(existing if isinstance(existing, dict) else {}, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class FakeTrafficCluster(FakeKubernetes):
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    replica_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail_route_patches: int = 0  # answer this many route patches with 500 (nothing changes)
    gateways_accept: bool = True  # False: no Gateway ever programs a new generation
    canary_pods_start: bool = True  # False: a Rollout's canary pods never become available

    def add_route(self, route: dict[str, Any]) -> None:
        route = copy.deepcopy(route)
        route["metadata"]["generation"] = 1
        self.routes[route["metadata"]["name"]] = route
        self._program(route, accept=True)

    def add_rollout(self, rollout: dict[str, Any]) -> None:
        rollout = copy.deepcopy(rollout)
        rollout["metadata"]["generation"] = 1
        rollout["status"] = {}
        self.rollouts[rollout["metadata"]["name"]] = rollout
        self._reconcile(rollout)

    def handle(self, request: Recorded) -> tuple[int, Any]:
        parts = request.path.strip("/").split("/")
        if len(parts) >= 7 and parts[3:5] == ["namespaces", self.namespace]:
            group = "/".join(parts[1:3])
            if group == "gateway.networking.k8s.io/v1" and parts[5] == "httproutes":
                return self._custom(request, self.routes, parts[6], "HTTPRoute")
            if group == "argoproj.io/v1alpha1" and parts[5] == "rollouts":
                return self._custom(request, self.rollouts, parts[6], "Rollout", parts[7:])
            if group == "apps/v1" and parts[5] == "replicasets" and request.method == "GET":
                rs = self.replica_sets.get(parts[6])
                if rs is None:
                    return 404, _status(404, "NotFound", f'replicasets.apps "{parts[6]}" not found')
                return 200, rs
        answer: tuple[int, Any] = super().handle(request)
        return answer

    def _custom(
        self,
        request: Recorded,
        store: dict[str, dict[str, Any]],
        name: str,
        kind: str,
        sub: list[str] | None = None,
    ) -> tuple[int, Any]:
        obj = store.get(name)
        if obj is None:
            return 404, _status(404, "NotFound", f'{kind.lower()}s "{name}" not found')
        if request.method == "GET":
            return 200, obj
        if request.method != "PATCH":
            return 405, _status(405, "MethodNotAllowed", request.method)
        if request.headers.get("content-type") != MERGE_PATCH:
            return 415, _status(415, "UnsupportedMediaType", request.headers["content-type"])
        if kind == "HTTPRoute" and self.fail_route_patches:
            self.fail_route_patches -= 1
            return 500, _status(500, "InternalError", "etcdserver: request timed out")
        patched = copy.deepcopy(obj)
        if sub == ["status"]:
            patched["status"] = merge_patch(patched.get("status") or {}, request.json["status"])
        else:
            merge_patch(patched, {k: v for k, v in request.json.items() if k != "status"})
        try:
            jsonschema.validate(patched, crd_schema(obj["apiVersion"], kind))
        except jsonschema.ValidationError as exc:
            return 422, _status(422, "Invalid", f"{kind} {name} is invalid: {exc.message}")
        if patched["spec"] != obj["spec"]:
            patched["metadata"]["generation"] += 1
        store[name] = patched
        if kind == "HTTPRoute":
            self._program(patched, accept=self.gateways_accept)
        else:
            self._reconcile(patched)
        return 200, patched

    def _program(self, route: dict[str, Any], accept: bool) -> None:
        generation = route["metadata"]["generation"]
        if not accept:
            return
        conditions = [
            {"type": kind, "status": "True", "reason": kind, "observedGeneration": generation,
             "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}
            for kind in ("Accepted", "ResolvedRefs")
        ]  # fmt: skip
        route["status"] = {
            "parents": [
                {
                    "parentRef": ref,
                    "controllerName": "example.com/gateway",
                    "conditions": conditions,
                }
                for ref in route["spec"]["parentRefs"]
            ]
        }

    def _reconcile(self, rollout: dict[str, Any]) -> None:
        """What the Argo Rollouts controller does for a basic canary, as far as the target sees."""
        spec, status = rollout["spec"], rollout["status"]
        steps = spec["strategy"]["canary"].get("steps") or []
        pod_hash, steps_hash = _hash(spec["template"]), _hash(steps)
        name, replicas = rollout["metadata"]["name"], int(spec.get("replicas", 1))
        self.replica_sets.setdefault(
            f"{name}-{pod_hash}",
            {"metadata": {"name": f"{name}-{pod_hash}"},
             "spec": {"template": copy.deepcopy(spec["template"])}, "status": {}},
        )  # fmt: skip
        if not status.get("stableRS"):
            status.update(stableRS=pod_hash, currentPodHash=pod_hash, currentStepHash=steps_hash)
        if (pod_hash, steps_hash) != (status.get("currentPodHash"), status.get("currentStepHash")):
            status.update(currentPodHash=pod_hash, currentStepHash=steps_hash, currentStepIndex=0)
            status.update(abort=False, promoteFull=False, pauseConditions=None)
            if pod_hash == status["stableRS"]:
                status["currentStepIndex"] = len(steps)  # rollback to stable: steps skipped
        if status.get("promoteFull"):
            status.update(stableRS=pod_hash, promoteFull=False, currentStepIndex=len(steps))
        weight = 0
        if status.get("abort"):
            status.update(currentStepIndex=0, phase="Degraded", pauseConditions=None)
            status["message"] = "RolloutAborted: Rollout aborted update"
        elif pod_hash == status["stableRS"]:
            status.update(currentStepIndex=len(steps), phase="Healthy", message=None)
        else:
            weight = self._run_steps(status, steps, pod_hash)
        canary = math.ceil(weight * replicas / 100) if self.canary_pods_start else 0
        available = {status["stableRS"]: replicas - canary}
        if pod_hash != status["stableRS"]:
            available[pod_hash] = canary
        for rs_hash, pods in available.items():
            self.replica_sets[f"{name}-{rs_hash}"]["status"] = {"availableReplicas": pods}
        status = {k: v for k, v in status.items() if v is not None}
        status["observedGeneration"] = str(rollout["metadata"]["generation"])
        rollout["status"] = status

    def _run_steps(self, status: dict[str, Any], steps: list[dict[str, Any]], pod_hash: str) -> int:
        """Run the canary steps from the current one; the canary's weight where they stop."""
        index = int(status.get("currentStepIndex") or 0)
        status.update(phase="Progressing", message="more replicas need to be updated")
        while index < len(steps):
            if "pause" in steps[index]:
                status.update(phase="Paused", message="CanaryPauseStep")
                status["pauseConditions"] = [
                    {"reason": "CanaryPauseStep", "startTime": "2026-01-01T00:00:00Z"}
                ]
                break
            if not self.canary_pods_start:
                break  # a setWeight step completes once the canary pods are available
            index += 1
        status["currentStepIndex"] = index
        if index >= len(steps):
            status.update(stableRS=pod_hash, phase="Healthy", message=None)
            return 0
        weight: int = next((s["setWeight"] for s in steps[index::-1] if "setWeight" in s), 0)
        return weight
