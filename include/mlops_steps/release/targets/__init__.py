"""Where a release goes: one protocol (:mod:`.base`), a local service, or Kubernetes, where
``MLOPS_K8S_TRAFFIC`` says how the canary's share is set: by replica count (:mod:`.kubernetes`),
by the weights of a Gateway API HTTPRoute (:mod:`.gateway`) or by an Argo Rollouts Rollout
(:mod:`.rollouts`)."""

from __future__ import annotations

from mlops_steps.core.settings import Settings
from mlops_steps.release.targets.base import DeployTarget


def open_target(settings: Settings) -> DeployTarget:
    """The target the settings name (``MLOPS_DEPLOY_TARGET``, ``MLOPS_K8S_TRAFFIC``)."""
    if settings.deploy.target == "kubernetes":
        traffic = settings.deploy.kubernetes_traffic
        if traffic == "gateway-api":
            from mlops_steps.release.targets.gateway import GatewayTarget

            return GatewayTarget.from_settings(settings)
        if traffic == "argo-rollouts":
            from mlops_steps.release.targets.rollouts import RolloutTarget

            return RolloutTarget.from_settings(settings)
        from mlops_steps.release.targets.kubernetes import KubernetesTarget

        return KubernetesTarget.from_settings(settings)
    from mlops_steps.release.targets.service import ServiceTarget

    return ServiceTarget.from_settings(settings)
