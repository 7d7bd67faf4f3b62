"""The release tests' model: the ``tracking`` fixture names a model per test (its registry
entry), and a step now reads that model's contract, so each test gets the churn contract under
its model's name in a models directory of its own."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.steps.release.contracts import contract_copy


@pytest.fixture
def tracking(tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A contract's name has at most 40 characters; the test's own name can be longer.
    digest = hashlib.sha256(os.environ["MLOPS_MODEL_NAME"].encode()).hexdigest()[:12]
    name = f"churn_{digest}"
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    monkeypatch.setenv("MLOPS_EXPERIMENT", f"exp-{name}")
    contract_copy(tmp_path / "models", name, monkeypatch)
    return tracking
