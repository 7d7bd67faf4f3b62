"""A model's contract as the steps read it: its data, its task, its metrics and its overrides.

Built from a YAML file by :mod:`mlops_steps.contract.loader`; frozen, hashable and standard
library only, so the DAG processor builds each model's DAGs from it at parse time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Task = Literal["binary", "multiclass", "regression"]
Kind = Literal["integer", "float", "category", "boolean"]
Unseen = Literal["reject", "missing"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
KINDS: tuple[Kind, ...] = ("integer", "float", "category", "boolean")

#: The metrics each task computes, and whether more is better. Gate checks, the primary metric
#: and the monitoring performance check name one of these (the loader refuses any other).
METRICS: Mapping[Task, Mapping[str, bool]] = {
    "binary": {"auc": True, "log_loss": False, "accuracy": True, "f1": True},
    "multiclass": {"log_loss": False, "macro_f1": True, "accuracy": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
DEFAULT_PRIMARY: Mapping[Task, str] = {
    "binary": "auc",
    "multiclass": "log_loss",
    "regression": "rmse",
}

#: The DAGs the factory builds for every model (ids ``mlops_<kind>__<model>``).
DAG_KINDS: tuple[str, ...] = ("training", "deployment", "monitoring", "rollback", "batch_scoring")
#: The assets every model has (URIs ``mlops://<model>/<what>``).
ASSETS: tuple[str, ...] = (
    "training-data",
    "drift-detected",
    "challenger",
    "registry-event",
    "deployments",
)

_Policy = TypeVar("_Policy")


@dataclass(frozen=True)
class Feature:
    """One model input: its kind, whether it may be missing, and the values a row may hold.

    ``minimum``/``maximum`` are hard limits (impossible values: the service answers 422, the
    validation fails); ``expected_min``/``expected_max`` the expected range (outside it a value is
    served, counted and flagged for monitoring). ``unseen`` says what a category outside the
    vocabulary gets: ``reject`` (422) or ``missing`` (served as a missing value).
    """

    name: str
    kind: Kind
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    expected_min: float | None = None
    expected_max: float | None = None
    categories: tuple[str, ...] = ()
    unseen: Unseen = "reject"
    description: str = ""

    @property
    def is_category(self) -> bool:
        return self.kind == "category"

    def to_dict(self) -> dict[str, Any]:
        """The feature as the logged feature spec holds it (the service reads it back)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.is_category:
            out["categories"] = list(self.categories)
            out["unseen"] = self.unseen
        elif self.kind != "boolean":
            out["minimum"] = self.minimum
            out["maximum"] = self.maximum
            if self.expected_min is not None or self.expected_max is not None:
                out["expected_range"] = {"min": self.expected_min, "max": self.expected_max}
        if self.nullable:
            out["nullable"] = True
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class GateCheck:
    """One gate check, shaped like MLflow's ``MetricThreshold``: an absolute ``threshold`` on the
    challenger's metric, and/or a change against the champion's on the same hold-out.

    ``min_absolute_change`` / ``min_relative_change`` are measured in the metric's better
    direction; a negative value is the loss tolerated (``auc`` with ``-0.01``: the challenger may
    be up to 0.01 below the champion)."""

    metric: str
    greater_is_better: bool
    threshold: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ModelContract:
    """Everything model-specific: the steps, the DAG factory and the service read this."""

    name: str
    task: Task
    label: str
    features: tuple[Feature, ...]
    primary_metric: str
    gate: tuple[GateCheck, ...]
    description: str = ""
    owners: tuple[str, ...] = ()
    source: str = ""
    id_column: str | None = None
    # binary: the two label values (negative, positive); multiclass: every class, in the order
    # of the model's probability columns; regression: empty.
    classes: tuple[str | int, ...] = ()
    positive_class: str | int | None = None
    slices: tuple[str, ...] = ()
    # Policy overrides by section (training, validation, gate, canary, monitoring, schedules),
    # each checked by the loader against the fields of the policy classes it overrides.
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    # Derived views the steps use.
    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.is_category)

    @property
    def numeric_features(self) -> tuple[str, ...]:
        """Integer, float and boolean features (what a model sees as numbers)."""
        return tuple(f.name for f in self.features if not f.is_category)

    @property
    def features_by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    @property
    def all_columns(self) -> tuple[str, ...]:
        """The columns a training table holds: id (when declared), features, label."""
        head = (self.id_column,) if self.id_column else ()
        return (*head, *self.feature_names, self.label)

    @property
    def metrics(self) -> Mapping[str, bool]:
        """This task's metric names, each with whether more is better."""
        return METRICS[self.task]

    @property
    def greater_is_better(self) -> bool:
        return METRICS[self.task][self.primary_metric]

    @property
    def class_labels(self) -> tuple[str, ...]:
        """The classes as the service names them (strings), in probability-column order."""
        return tuple(str(c) for c in self.classes)

    def dag_id(self, kind: str) -> str:
        """The id of this model's DAG of ``kind`` (one of :data:`DAG_KINDS`)."""
        return f"mlops_{kind}__{self.name}"

    def asset_uri(self, what: str) -> str:
        """The URI of this model's asset ``what`` (one of :data:`ASSETS`)."""
        return f"mlops://{self.name}/{what}"

    def section(self, name: str) -> Mapping[str, Any]:
        return self.overrides.get(name, {})

    def policy(self, section: str, base: _Policy) -> _Policy:
        """``base`` (a policy dataclass) with this model's overrides from ``section`` applied to
        the fields it has (a section may override several policy classes)."""
        names = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
        values = {k: v for k, v in self.section(section).items() if k in names}
        return dataclasses.replace(base, **values) if values else base  # type: ignore[type-var]

    def feature_spec(
        self, observed: Mapping[str, tuple[float, float]] | None = None
    ) -> dict[str, Any]:
        """The JSON feature spec logged with every model; the service validates requests and
        shapes its answers with it.

        ``observed``: the (min, max) of each numeric feature in the training data, written as
        ``"training_range"``; a value outside it (or the declared expected range) is served but
        flagged, one beyond ``minimum``/``maximum`` gets 422.
        """
        features = [f.to_dict() for f in self.features]
        for feature in features:
            seen = (observed or {}).get(feature["name"])
            if seen is not None and feature["kind"] in ("integer", "float"):
                feature["training_range"] = {"min": float(seen[0]), "max": float(seen[1])}
        spec: dict[str, Any] = {
            "version": 1,
            "model": self.name,
            "task": self.task,
            "id_column": self.id_column,
            "label_column": self.label,
            "features": features,
        }
        if self.task != "regression":
            spec["classes"] = list(self.class_labels)
        if self.task == "binary":
            spec["positive_class"] = str(self.positive_class)
        return spec

    def training_ranges(self, frame: Any) -> dict[str, tuple[float, float]]:
        """The observed (min, max) of each integer/float feature of a pandas frame (not imported
        here: this module stays standard library only)."""
        return {
            f.name: (float(frame[f.name].min()), float(frame[f.name].max()))
            for f in self.features
            if f.kind in ("integer", "float") and frame[f.name].notna().any()
        }

    def fingerprint(self) -> str:
        """A short hash of what the model is trained and judged on (part of a training key)."""
        body = json.dumps(self.feature_spec(), sort_keys=True, default=str)
        gate = json.dumps([c.to_dict() for c in self.gate], sort_keys=True)
        return hashlib.sha256((body + gate).encode()).hexdigest()[:16]
