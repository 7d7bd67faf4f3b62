"""The release tests' model: the ``tracking`` fixture names a model per test (its registry
entry), and a step now reads that model's contract, so each test gets the churn contract under
its model's name in a models directory of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.steps.release.contracts import own_churn_contract


@pytest.fixture
def tracking(tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    own_churn_contract(tmp_path, monkeypatch)
    return tracking
