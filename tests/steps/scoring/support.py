"""What the batch scoring tests share: the model's name, the reference every output is compared
with (the version's booster on the same rows), the rows, and the verb as the CLI runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from mlops_steps.cli import main as cli
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.training.pyfunc_model import prepare_frame, spec_encoding

MODEL = "scoring_churn"
CHURN = load_contract("churn")
FEATURES, ID_COLUMN = list(CHURN.feature_names), str(CHURN.id_column)


@dataclass(frozen=True)
class Versions:
    home: Path
    models: Path
    tracking: str


def booster_scores(version: str, frame: pd.DataFrame) -> np.ndarray:
    """The version's booster on the rows, encoded as training encodes them: the reference."""
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}").unwrap_python_model()
    spec = load_contract(MODEL).feature_spec()
    encoded = prepare_frame(frame, *spec_encoding(spec))
    return np.asarray(model.booster.predict(encoded), dtype=np.float64)


def table(rows: int = 2500, seed: int = 5) -> pd.DataFrame:
    """Contract rows as an export would hold them: id, features and the label (ignored)."""
    return generate_churn(rows, seed=seed)


def score(run: str, source: Path | str, output: Path | str, *extra: str) -> int:
    return cli.main(
        ["score-batch", "--partition", run, "--input", str(source), "--output", str(output),
         *extra]
    )  # fmt: skip


def read_run(output: Path, run: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    directory = output / f"run={run}"
    manifest = json.loads((directory / "manifest.json").read_text())
    parts = [pd.read_parquet(directory / f["path"]) for f in manifest["files"]]
    return pd.concat(parts, ignore_index=True), manifest
