"""The registered version a batch run scores with, loaded once, and its answers as columns.

The version is loaded as every step loads a model (``mlflow.pyfunc.load_model``); each chunk
goes through the logged model's own ``predict`` (the feature encoding it was trained with, then
its LightGBM booster), unwrapped from the pyfunc so the per-call signature check is paid once by
:mod:`mlops_steps.scoring.table` for the whole table instead of once per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_steps.common.tracking import version_by_alias
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError


class ModelVersionNotFound(StepError):
    """The alias or version number given names no version of the model."""


class UnexpectedModelOutput(StepError):
    """The version answers in a shape its contract's task does not have."""


@dataclass(frozen=True)
class ScoringModel:
    """One loaded version: who it is, and the logged model that answers."""

    name: str
    version: str
    ref: str  # what was asked for: an alias or the number
    run_id: str
    python_model: Any  # the logged ContractModel (its predict: encoding + booster)

    def outputs(self, frame: Any, contract: ModelContract) -> dict[str, pa.Array]:
        """The task's output columns for the rows of ``frame`` (the contract's features):
        binary ``score`` (P(positive class)); multiclass ``class`` and ``proba_<class>`` per
        class, in the contract's order; regression ``value``."""
        raw = np.asarray(self.python_model.predict(None, frame), dtype=np.float64)
        rows = len(frame)
        if contract.task == "multiclass":
            labels = contract.class_labels
            if raw.ndim != 2 or raw.shape != (rows, len(labels)):
                raise self._shape_error(raw, f"{rows} x {len(labels)} class probabilities")
            index = pa.array(raw.argmax(axis=1).astype(np.int32))
            out = {"class": pa.DictionaryArray.from_arrays(index, pa.array(labels))}
            for position, label in enumerate(labels):
                out[f"proba_{label}"] = pa.array(raw[:, position])
            return out
        if raw.shape != (rows,):
            raise self._shape_error(raw, f"{rows} values")
        return {"score" if contract.task == "binary" else "value": pa.array(raw)}

    def _shape_error(self, raw: np.ndarray, expected: str) -> StepError:
        return UnexpectedModelOutput(
            f"answered shape {raw.shape}, expected {expected}",
            subject=f"{self.name} v{self.version}",
            fix="score with a version trained by the 'train' step for this contract's task",
        )


def resolve_version(client: Any, model_name: str, ref: str) -> Any:
    """The model version ``ref`` names: a version number, else an alias."""
    from mlflow.exceptions import MlflowException

    if ref.isdigit():
        try:
            return client.get_model_version(model_name, ref)
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                raise
        raise ModelVersionNotFound(
            f"{model_name} has no version {ref}",
            subject=f"{model_name}/{ref}",
            fix="give an existing version number, or an alias such as champion",
        )
    version = version_by_alias(client, model_name, ref)
    if version is None:
        raise ModelVersionNotFound(
            f"no version of {model_name} has the alias {ref!r}",
            subject=f"{model_name}@{ref}",
            fix="promote a version (the deployment pipeline sets champion), or give a version "
            "number",
        )
    return version


def load_scoring_model(client: Any, model_name: str, ref: str) -> ScoringModel:
    """The version ``ref`` names, loaded once for the whole run."""
    import mlflow

    version = resolve_version(client, model_name, ref)
    number = str(version.version)
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{number}")
    python_model = loaded.unwrap_python_model()
    if not callable(getattr(python_model, "predict", None)):
        raise UnexpectedModelOutput(
            "is not a pyfunc model with a predict method",
            subject=f"{model_name} v{number}",
            fix="score with a version logged by the 'train' step",
        )
    return ScoringModel(model_name, number, ref, str(version.run_id), python_model)
