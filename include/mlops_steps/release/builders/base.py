"""What every image builder does: the contract of names and records, and the builders' protocol.

A model version served by a version of the code is one image, named
``{MLOPS_SERVING_IMAGE}:v{version}-{code_sha[:12]}`` (``-dirty`` appended for uncommitted code);
the same pair is never built twice. A finished build is recorded on the MLflow model version as
tags

* ``mlops.image.ref`` (the reference), ``mlops.image.backend`` (``bundle``, ``ci``, ``kaniko``),
  ``mlops.image.built_at`` (UTC, ISO 8601) and, for ``ci`` / ``kaniko``, ``mlops.image.build_url``
  (the workflow run's page, or the build Job's API path ``kubernetes:///apis/batch/v1/...``),

and a later build of the same reference by the same backend returns ``built_now: False`` at once.

Builders (``MLOPS_IMAGE_BUILDER``; :func:`mlops_steps.release.builders.open_builder` picks one):

* ``bundle`` (the embedded default, no Docker engine): the model directory in the local model
  store (:mod:`.bundle`).
* ``ci``: a GitHub Actions workflow dispatch, followed to its run's end (:mod:`.ci`).
* ``kaniko``: a build Job in the cluster (:mod:`.kaniko`).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Protocol

from mlops_steps.core.settings import Settings

REF_TAG = "mlops.image.ref"
BACKEND_TAG = "mlops.image.backend"
BUILT_AT_TAG = "mlops.image.built_at"
BUILD_URL_TAG = "mlops.image.build_url"

_TAG_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def utc_now() -> str:
    """Now, as the records write it (``2025-01-31T12:00:00Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_tag(version: str, code_sha: str) -> str:
    """``v<version>-<sha12>`` (``-dirty`` kept), reduced to a valid OCI tag."""
    sha = code_sha.strip() or "unknown"
    suffix = "-dirty" if sha.endswith("-dirty") else ""
    raw = f"v{version}-{sha.removesuffix('-dirty')[:12]}{suffix}"
    return _TAG_INVALID.sub("-", raw)[:128]


def image_ref(settings: Settings, version: str, code_sha: str) -> str:
    return f"{settings.image_build.serving_image}:{image_tag(version, code_sha)}"


@dataclass(frozen=True)
class BuildRequest:
    """One registered model version at one version of the code: what a builder builds."""

    model_name: str
    version: str
    run_id: str | None  # the MLflow run the version was registered from
    code_sha: str
    ref: str  # image_ref(settings, version, code_sha)

    @property
    def tag(self) -> str:
        """The reference's tag (a registry host may carry a port, so split at the last colon)."""
        return self.ref.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class Built:
    """A finished build: whether this call did it, when, and where to look at it."""

    built_now: bool
    built_at: str  # UTC, ISO 8601
    build_url: str | None = None  # ci: the run's page; kaniko: the Job's API path
    bundle_path: str | None = None  # bundle: the bundle's directory or object-store prefix


class ImageBuilder(Protocol):
    """Turns a :class:`BuildRequest` into an image (or a bundle) named by its reference."""

    @property
    def remote(self) -> bool:
        """True when it builds from the repository at a commit into a registry the step cannot
        list: the code sha must then be a full commit, and the tags on the model version are the
        only proof of a finished build. A local builder checks its own output instead."""
        ...

    def build(self, request: BuildRequest) -> Built:
        """Build ``request.ref``, or attach to a build of it already under way (or done, where
        the builder can tell); raises StepError for what a retry cannot fix."""
        ...
