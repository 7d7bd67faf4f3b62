"""What the builder tests share: the code sha they build and the build request for a version."""

from __future__ import annotations

from mlops_steps.core.settings import Settings
from mlops_steps.release.builders.base import BuildRequest, image_ref
from mlops_steps.release.builders.ci import CiBuilder

SHA = "0123456789abcdef0123456789abcdef01234567"
CI_TOKEN = "ghp_do-not-log-this-token-123"


def build_request(settings: Settings, version: str) -> BuildRequest:
    ref = image_ref(settings, version, SHA)
    return BuildRequest("churn", version, run_id="run-1", code_sha=SHA, ref=ref)


def ci_build(settings: Settings, version: str = "7") -> str:
    """Build ``version`` with the ci builder; the run's page."""
    url = CiBuilder(settings).build(build_request(settings, version)).build_url
    assert url is not None
    return url
