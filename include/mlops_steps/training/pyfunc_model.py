"""A trained model as MLflow loads it (MLflow "models from code").

MLflow copies this file into every logged model and executes it on load, so it must stand alone:
it imports no project code. The model is a native LightGBM booster plus the feature spec; requests
carry raw values (strings for categories, booleans, missing values where the spec allows them)
and ``prepare_frame`` turns them into what the booster was trained on. Training imports
``prepare_frame`` from here, so both sides share one encoding.

Outputs by the spec's ``task``: binary P(label == positive_class) (1-D); multiclass the class
probabilities (rows x classes, in the spec's ``classes`` order); regression the value (1-D).
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

_TRUE = {"true", "1", "yes", "1.0"}
_FALSE = {"false", "0", "no", "0.0"}


def _as_number(column: pd.Series, dtype: str = "float64") -> pd.Series:
    """Booleans as 0/1 and everything numeric as floats (missing values as NaN)."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype(dtype)
    text = column.astype("string").str.strip().str.lower()
    mapped = text.map(lambda v: 1.0 if v in _TRUE else (0.0 if v in _FALSE else np.nan))
    return mapped.where(text.notna(), np.nan).astype(dtype)


def _encode_category(column: pd.Series, vocabulary: Sequence[str]) -> pd.Categorical:
    """The column as the vocabulary's categories (anything else missing). A ``category`` column
    (a training partition) is re-coded through its categories, not value by value."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        seen = column.cat.categories.astype("string").astype(object)
        recode = np.append(pd.Index(list(vocabulary)).get_indexer(seen), -1)
        return pd.Categorical.from_codes(recode[column.cat.codes.to_numpy()], list(vocabulary))
    return pd.Categorical(
        column.astype("string").astype(object).where(column.notna()), categories=list(vocabulary)
    )


def prepare_frame(
    frame: pd.DataFrame,
    features: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    booleans: Sequence[str] = (),
    float_dtype: str = "float64",
) -> pd.DataFrame:
    """Select the model's columns in order; encode categories with the fixed training vocabulary
    (an unseen category becomes missing, which LightGBM routes like a missing value), booleans as
    0/1 and numbers as ``float_dtype`` (a missing value is NaN; training passes float32 to halve
    the matrix LightGBM builds)."""
    out = frame.loc[:, list(features)].copy()
    for column in out.columns:
        if column in categories:
            out[column] = _encode_category(out[column], categories[column])
        elif column in booleans:
            out[column] = _as_number(out[column], float_dtype)
        else:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype(float_dtype)
    return out


def spec_encoding(spec: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The feature names, category vocabularies and boolean features a feature spec declares."""
    features = list(spec["features"])
    return (
        [f["name"] for f in features],
        {f["name"]: list(f["categories"]) for f in features if f["kind"] == "category"},
        [f["name"] for f in features if f["kind"] == "boolean"],
    )


class ContractModel(PythonModel):
    """A LightGBM booster answering in its task's shape (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])
        spec = json.loads(Path(context.artifacts["feature_spec"]).read_text(encoding="utf-8"))
        self.task = spec.get("task", "binary")
        self.features, self.categories, self.booleans = spec_encoding(spec)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        frame = prepare_frame(model_input, self.features, self.categories, self.booleans)
        return np.asarray(self.booster.predict(frame), dtype=np.float64)


# The class name older models were logged with (each logged model carries its own copy).
ChurnModel = ContractModel

set_model(ContractModel())
