"""How a model version becomes a serving image: one protocol (:mod:`.base`), three builders."""

from __future__ import annotations

from mlops_steps.core.settings import Settings
from mlops_steps.release.builders.base import ImageBuilder


def open_builder(settings: Settings) -> ImageBuilder:
    """The builder the settings name (``MLOPS_IMAGE_BUILDER``); nothing is contacted yet."""
    if settings.image_build.builder == "ci":
        from mlops_steps.release.builders.ci import CiBuilder

        return CiBuilder(settings)
    if settings.image_build.builder == "kaniko":
        from mlops_steps.release.builders.kaniko import KanikoBuilder

        return KanikoBuilder(settings)
    from mlops_steps.release.builders.bundle import BundleBuilder

    return BundleBuilder(settings)
