"""The champion being monitored and the data it was trained on: its training partition (checked
against the sha256 it was trained on), its feature spec and its predictions on its own hold-out
(the task's output: score, predicted class or value)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.storage import Partition, load_partition_frame
from mlops_steps.common.tracking import CHAMPION, version_by_alias
from mlops_steps.common.window import FeatureKind
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import NothingToDo, StepError
from mlops_steps.core.settings import Settings


class ReferenceDataError(StepError):
    """The champion's training data cannot be found or is not what it was trained on."""


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


def load_champion(client: Any, model_name: str) -> Champion:
    version = version_by_alias(client, model_name, CHAMPION)
    if version is None:
        raise NothingToDo(
            "no version has the alias 'champion' yet, so no model is serving",
            subject=f"{model_name}@{CHAMPION}",
            fix="promote a version with the deployment pipeline; monitoring starts then",
        )
    return Champion(model_name, str(version.version), version.run_id, dict(version.tags or {}))


def champion_spec(client: Any, champion: Champion) -> dict[str, Any]:
    """The champion's own feature spec (logged with the model; serving validates with it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(champion.run_id, "feature_spec.json", tmp)
            spec = json.loads(Path(path).read_text())
        except Exception as exc:
            raise ReferenceDataError(
                f"its run {champion.run_id} has no readable feature_spec.json ({exc})",
                subject=f"{champion.name} v{champion.version}",
                fix="champions are trained by the 'train' step, which logs the spec",
            ) from None
    return dict(spec)


def features_of(spec: dict[str, Any]) -> dict[str, FeatureKind]:
    return {
        f["name"]: FeatureKind(f["name"], f["kind"], bool(f.get("nullable", False)))
        for f in spec["features"]
    }


def champion_features(client: Any, champion: Champion) -> dict[str, FeatureKind]:
    """The features of the champion's own feature spec, with their kinds and nullability."""
    return features_of(champion_spec(client, champion))


def reference_data(settings: Settings, champion: Champion) -> tuple[pd.DataFrame, Partition, str]:
    """The champion's training partition, after both checksum checks."""
    subject = f"{champion.name} v{champion.version}"
    partition_key = champion.tags.get("mlops.partition")
    expected_sha = champion.tags.get("mlops.data_sha256")
    if not partition_key or not expected_sha:
        raise ReferenceDataError(
            "lacks the mlops.partition / mlops.data_sha256 tags naming its training data",
            subject=subject,
            fix="register versions with the 'register' step (it sets both tags)",
        )
    partition = Partition.of(settings.dataset_root, partition_key)
    if not partition.manifest.is_file():
        raise ReferenceDataError(
            f"its training partition {partition_key} is not at {partition.root}",
            subject=subject,
            fix="restore the partition (or point MLOPS_DATA_ROOT at the shared data volume)",
        )
    frame, manifest = load_partition_frame(partition)  # checks the file against its manifest
    if manifest.get("data_sha256") != expected_sha:
        raise ReferenceDataError(
            f"partition {partition_key} holds data {manifest.get('data_sha256')}, but the "
            f"version was trained on {expected_sha}",
            subject=str(partition.data),
            fix="the partition was re-ingested with other data; restore the trained data",
        )
    return frame, partition, expected_sha


def reference_predictions(
    settings: Settings,
    champion: Champion,
    frame: pd.DataFrame,
    kinds: dict[str, FeatureKind],
    data_sha: str,
    *,
    contract: ModelContract,
) -> pd.Series:
    """The champion's predictions on its own hold-out, computed once per version and data hash:
    scores (binary), values (regression) or predicted classes (multiclass, the class labels of
    the probability columns' argmax)."""
    import mlflow

    from mlops_steps.common.dataplane import fetch_file
    from mlops_steps.common.metrics import id_column_of, split_frame, with_row_ids
    from mlops_steps.common.storage import write_parquet

    column = "class" if contract.task == "multiclass" else "score"
    cache = settings.monitoring_root / "reference" / f"v{champion.version}-{data_sha[:16]}.parquet"
    fetch_file(cache)
    if cache.is_file():
        cached = pd.read_parquet(cache)
        if column in cached.columns:
            return cached[column]
    id_column = id_column_of(contract)
    if id_column not in frame.columns:
        frame = with_row_ids(frame, contract)
    holdout = split_frame(frame, id_column).holdout
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    inputs = holdout.loc[:, list(kinds)]
    # Partitions keep categories as ``category``; the model's signature takes their text.
    lean = [c for c in inputs.columns if isinstance(inputs[c].dtype, pd.CategoricalDtype)]
    inputs = inputs.astype(dict.fromkeys(lean, object)) if lean else inputs
    raw = np.asarray(model.predict(inputs))
    if contract.task == "multiclass":
        labels = np.asarray(contract.class_labels, dtype=object)
        if raw.ndim != 2 or raw.shape[1] != len(labels):
            raise ReferenceDataError(
                f"predicts shape {raw.shape}, not one probability per class ({len(labels)})",
                subject=f"{champion.name} v{champion.version}",
                fix="a multiclass model answers rows x classes in the contract's class order",
            )
        predictions = pd.Series(labels[raw.argmax(axis=1)], name=column, dtype=object)
    else:
        predictions = pd.Series(raw.astype("float64").reshape(-1), name=column)
    write_parquet(cache, predictions.to_frame())
    return predictions


def reference_scores(
    settings: Settings,
    champion: Champion,
    frame: pd.DataFrame,
    kinds: dict[str, FeatureKind],
    data_sha: str,
    *,
    contract: ModelContract | None = None,
) -> np.ndarray:
    """The champion's scores (or values) on its own hold-out, as an array."""
    if contract is None:
        from mlops_steps.contract.loader import load_contract

        contract = load_contract(settings.model_name)
    return reference_predictions(
        settings, champion, frame, kinds, data_sha, contract=contract
    ).to_numpy()
