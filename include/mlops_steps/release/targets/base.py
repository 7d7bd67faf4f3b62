"""Where a release lands: the contract every deployment target implements.

A target owns the serving traffic of one model: which version is stable, which is the canary and
what share the canary gets. The deployment steps (canary, promote, rollback) only talk to a
:class:`DeployTarget`; :func:`mlops_steps.release.targets.open_target` picks the implementation
from the settings:

* ``service`` (the embedded default): the model service's bearer-token admin API over HTTP.
* ``kubernetes``: the stable and canary Deployments of ``serving/k8s/``, patched through the
  Kubernetes API from the step's pod; traffic splits by replica count behind one Service, or
  (``MLOPS_K8S_TRAFFIC``) by an HTTPRoute's weights (``gateway-api``, which also mirrors requests
  for a shadow phase) or an Argo Rollouts ``Rollout``'s ``setWeight`` steps (``argo-rollouts``).

Every method is idempotent (a retry after a crash converges on the same state) and leaves the
traffic as it was when it raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Release:
    """A model version ready to go live: its image (or local bundle) and where it came from."""

    model_name: str
    version: str
    image_ref: str  # e.g. ghcr.io/airflow-mlops/serving:v7-1a2b3c4d5e6f
    bundle_path: str | None = None  # the local model-store bundle (builder "bundle")


@dataclass(frozen=True)
class TrafficState:
    """What serves now: the stable version, the canary (if any) and the canary's share of the
    answers; ``shadow_share`` is the share of requests the canary also scores without answering
    them (shadow mode: its ``canary_weight`` is then 0)."""

    stable_version: str | None
    canary_version: str | None
    canary_weight: float
    shadow_share: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "canary_weight": self.canary_weight,
            "shadow_share": self.shadow_share,
        }


class DeployTarget(Protocol):
    """The serving traffic of one model."""

    def state(self) -> TrafficState:
        """The traffic as it is now (read from the target, never from a cache)."""
        ...

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        """Run ``release`` beside the stable version with ``weight`` of the traffic (and no
        shadow share). When ``release`` is already the canary only its weight changes: a
        progressive release calls this once per traffic step."""
        ...

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        """Run ``release`` beside the stable version answering nobody: it scores a copy of
        ``share`` of the requests, which the stable version answers (canary weight 0). A target
        that cannot mirror requests raises a StepError naming the setting that can."""
        ...

    def promote(self, release: Release) -> TrafficState:
        """Make ``release`` the stable version at 100 % and retire the canary."""
        ...

    def metrics_urls(self) -> list[str]:
        """Every ``/metrics`` endpoint serving this model now (one per process): the canary
        analysis sums them, since a load-balanced Service would answer from a random pod."""
        ...

    def rollback(self, stable: Release | None) -> TrafficState:
        """Canary weight to 0 and the canary retired; the stable version is ``stable`` (or left as
        it is when None)."""
        ...
