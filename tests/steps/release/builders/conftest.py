from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_apis import FakeGitHub
from tests.steps.release.builders.helpers import CI_TOKEN


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """The ci builder pointed at a fake GitHub, polling fast, with a 5 s deadline."""
    with FakeGitHub() as fake:
        monkeypatch.setenv("MLOPS_IMAGE_BUILDER", "ci")
        monkeypatch.setenv("MLOPS_CI_DISPATCH_URL", fake.dispatch_url)
        monkeypatch.setenv("MLOPS_CI_POLL_INTERVAL_S", "0.01")
        monkeypatch.setenv("MLOPS_CI_TIMEOUT_S", "5")
        monkeypatch.setenv("MLOPS_CI_TOKEN", CI_TOKEN)
        yield fake
