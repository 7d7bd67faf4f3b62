"""Where a release goes: one protocol (:mod:`.base`), a local service and Kubernetes Deployments."""

from __future__ import annotations

from mlops_steps.core.settings import Settings
from mlops_steps.release.targets.base import DeployTarget


def open_target(settings: Settings) -> DeployTarget:
    """The target the settings name (``MLOPS_DEPLOY_TARGET``)."""
    if settings.deploy.target == "kubernetes":
        from mlops_steps.release.targets.kubernetes import KubernetesTarget

        return KubernetesTarget.from_settings(settings)
    from mlops_steps.release.targets.service import ServiceTarget

    return ServiceTarget.from_settings(settings)
