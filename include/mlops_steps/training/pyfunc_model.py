"""The churn model as MLflow loads it (MLflow "models from code").

MLflow copies this file into every logged model and executes it on load, so it must stand alone:
it imports no project code. The model is a native LightGBM booster plus the feature spec; requests
carry raw values (strings for categories) and ``prepare_frame`` turns them into what the booster
was trained on. Training imports ``prepare_frame`` from here, so both sides share one encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


def prepare_frame(
    frame: pd.DataFrame, features: Sequence[str], categories: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """Select the model's columns in order; encode categories with the fixed training vocabulary
    (an unseen category becomes missing, which LightGBM routes like a missing value)."""
    out = frame.loc[:, list(features)].copy()
    for column, vocabulary in categories.items():
        out[column] = pd.Categorical(out[column], categories=list(vocabulary))
    return out


class ChurnModel(PythonModel):
    """Churn probability from a LightGBM booster and its feature spec."""

    def load_context(self, context: Any) -> None:
        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])
        spec = json.loads(Path(context.artifacts["feature_spec"]).read_text(encoding="utf-8"))
        self.features = [f["name"] for f in spec["features"]]
        self.categories = {
            f["name"]: f["categories"] for f in spec["features"] if f["kind"] == "category"
        }

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        frame = prepare_frame(model_input, self.features, self.categories)
        return np.asarray(self.booster.predict(frame), dtype=np.float64)


set_model(ChurnModel())
