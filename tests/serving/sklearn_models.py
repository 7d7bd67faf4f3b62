"""Models of all three tasks from scikit-learn's bundled tables, as bundles in a model store.

Each table is written to a CSV and read back; a contract file is written for it and loaded with
the project's loader; a LightGBM booster is trained on the frame encoded as training encodes it
(``mlops_steps.training.train.model_frame``), and the bundle holds the booster and the contract's
feature spec (with training ranges, and score buckets for regression) in an MLflow model
directory, with a manifest, as the release builder writes one. The service loads it with
``SERVING_STABLE_ALIAS=bundle:current``.

* binary ``cancer`` (breast cancer): 30 float features with a hard minimum of 0, plus a boolean;
* multiclass ``wine``: 13 float features, classes ``class_0..2``, an expected range on alcohol;
* regression ``diabetes``: ``sex`` as a category (unseen values served as missing), ``bmi``
  nullable (some training rows miss it), hard limits of -1..1 on the scaled measurements.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import yaml
from sklearn import datasets

from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.training.train import model_frame

TASKS = {"cancer": "binary", "wine": "multiclass", "diabetes": "regression"}


@dataclass
class Bundle:
    name: str
    contract: ModelContract
    booster: lightgbm.Booster
    spec: dict[str, Any]
    frame: pd.DataFrame  # the table as read back from its CSV (label included)

    def records(self, rows: int, start: int = 0) -> list[dict[str, Any]]:
        """Rows of the table as request records (JSON types, null for a missing value)."""
        out = []
        for _, row in self.frame.iloc[start : start + rows].iterrows():
            record: dict[str, Any] = {}
            for feature in self.contract.features:
                value = row[feature.name]
                if pd.isna(value):
                    record[feature.name] = None
                elif feature.kind == "boolean":
                    record[feature.name] = bool(value)
                elif feature.kind == "category":
                    record[feature.name] = str(value)
                else:
                    record[feature.name] = float(value)
            out.append(record)
        return out

    def expected(self, records: list[dict[str, Any]]) -> np.ndarray:
        """Booster.predict on the records encoded as training encodes them."""
        frame = pd.DataFrame.from_records(records, columns=list(self.contract.feature_names))
        return np.asarray(self.booster.predict(model_frame(frame, self.contract)))


def _table(name: str, directory: Path) -> pd.DataFrame:
    if name == "cancer":
        frame = datasets.load_breast_cancer(as_frame=True).frame
        frame["large"] = frame["mean radius"] > 15.0
    elif name == "wine":
        frame = datasets.load_wine(as_frame=True).frame
        frame["target"] = frame["target"].map(lambda v: f"class_{v}")
    else:
        frame = datasets.load_diabetes(as_frame=True).frame
        frame["sex"] = np.where(frame["sex"] > 0, "f", "m")
        frame.loc[frame.index % 17 == 0, "bmi"] = np.nan
    path = directory / f"{name}.csv"
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def _features(name: str, frame: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for column in frame.columns:
        if column == "target":
            continue
        if column == "large":
            out.append({"name": column, "kind": "boolean"})
        elif column == "sex":
            out.append({"name": column, "kind": "category", "categories": ["f", "m"],
                        "unseen": "missing"})  # fmt: skip
        elif name == "diabetes":
            feature = {"name": column, "kind": "float", "limits": {"min": -1.0, "max": 1.0}}
            if column == "age":
                feature["description"] = "age, scaled"
            out.append({**feature, **({"nullable": True} if column == "bmi" else {})})
        else:
            feature = {"name": column, "kind": "float", "limits": {"min": 0.0}}
            if column == "alcohol":
                feature["expected"] = {"min": 11.5, "max": 14.5}
            out.append(feature)
    return out


def _contract(name: str, frame: pd.DataFrame, models: Path) -> ModelContract:
    task = TASKS[name]
    document: dict[str, Any] = {"name": name, "task": task, "label": "target"}
    if task == "binary":
        document |= {"classes": [0, 1], "positive_class": 1}
    elif task == "multiclass":
        document["classes"] = ["class_0", "class_1", "class_2"]
    document["features"] = _features(name, frame)
    check = {"binary": ("auc", 0.5), "multiclass": ("log_loss", 2.0), "regression": ("rmse", 1e6)}
    metric, threshold = check[task]
    document["gate"] = {"checks": [{"metric": metric, "threshold": threshold}]}
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return load_contract(name, models)


def _train(contract: ModelContract, frame: pd.DataFrame) -> lightgbm.Booster:
    params: dict[str, Any] = {"objective": contract.task, "verbose": -1, "num_threads": 1,
                              "num_leaves": 7, "min_data_in_leaf": 5, "seed": 1}  # fmt: skip
    label = frame[contract.label]
    if contract.task == "multiclass":
        params["num_class"] = len(contract.classes)
        label = label.map({c: i for i, c in enumerate(contract.class_labels)})
    data = lightgbm.Dataset(model_frame(frame, contract), label=label)
    return lightgbm.train(params, data, num_boost_round=25)


def build(name: str, store: Path, directory: Path, version: str = "1") -> Bundle:
    """Train model ``name`` and write it to ``store/current`` (its contract in directory)."""
    frame = _table(name, directory)
    contract = _contract(name, frame, directory / "models")
    booster = _train(contract, frame)
    spec = contract.feature_spec(contract.training_ranges(frame))
    if contract.task == "regression":
        predicted = booster.predict(model_frame(frame, contract))
        quantiles = np.quantile(predicted, [q / 10 for q in range(1, 10)])
        spec["score_buckets"] = sorted({round(float(q), 6) for q in quantiles})
    bundle = store / "current"
    model = bundle / "model"
    (model / "artifacts").mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model / "artifacts" / "booster.txt"))
    (model / "artifacts" / "feature_spec.json").write_text(json.dumps(spec))
    inputs = [
        {"name": f.name, "type": "string" if f.is_category else "double"} for f in contract.features
    ]
    mlmodel = {
        "flavors": {
            "python_function": {
                "artifacts": {
                    "booster": {"path": "artifacts/booster.txt"},
                    "feature_spec": {"path": "artifacts/feature_spec.json"},
                }
            }
        },
        "signature": {"inputs": json.dumps(inputs)},
    }
    (model / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    files = {
        path.relative_to(bundle).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(model.rglob("*"))
        if path.is_file()
    }
    manifest = {"model_name": name, "version": version, "model_dir": "model", "files": files}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return Bundle(name, contract, booster, spec, frame)
