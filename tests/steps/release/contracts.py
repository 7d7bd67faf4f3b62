"""Model contracts for step tests: a copy of a contract under another model name (tests name a
registered model per test), or a contract written for one of scikit-learn's bundled tables."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from mlops_steps.contract.loader import MODELS_DIR_ENV, contract_path, models_dir


def contract_copy(
    directory: Path, name: str, monkeypatch: pytest.MonkeyPatch, base: str = "churn"
) -> Path:
    """``base``'s contract as model ``name`` in ``directory`` (beside every contract of the
    current models directory), with MLOPS_MODELS_DIR pointing there."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in models_dir().glob("*.yaml"):
        (directory / source.name).write_text(source.read_text())
    text = contract_path(base).read_text()
    target = directory / f"{name}.yaml"
    target.write_text(re.sub(r"(?m)^name: .*$", f"name: {name}", text, count=1))
    monkeypatch.setenv(MODELS_DIR_ENV, str(directory))
    return target


def own_churn_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's model (``tracking`` names one per test) renamed within a contract name's 40
    characters, with the churn contract under that name; returns the name."""
    digest = hashlib.sha256(os.environ["MLOPS_MODEL_NAME"].encode()).hexdigest()[:12]
    name = f"churn_{digest}"
    monkeypatch.setenv("MLOPS_MODEL_NAME", name)
    monkeypatch.setenv("MLOPS_EXPERIMENT", f"exp-{name}")
    contract_copy(tmp_path / "models", name, monkeypatch)
    return name
