"""The training steps read the model's contract by the model name the ``tracking`` fixture makes
unique per test: that name, shortened to a contract name's 40 characters, gets the churn
contract in a models directory of the test's own."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def tracking(tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "churn_" + hashlib.sha256(os.environ["MLOPS_MODEL_NAME"].encode()).hexdigest()[:12]
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    monkeypatch.setenv("MLOPS_EXPERIMENT", f"exp-{name}")
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    churn = (REPO / "models" / "churn.yaml").read_text(encoding="utf-8")
    (models / "churn.yaml").write_text(churn, encoding="utf-8")
    renamed = re.sub(r"(?m)^name: .*$", f"name: {name}", churn, count=1)
    (models / f"{name}.yaml").write_text(renamed, encoding="utf-8")
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    return tracking
