"""The feature spec a model is logged with, as the service reads it: the request codec, the
task and its answers' shape, checked against the booster before the model serves."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from mlops_serving.codec import FeatureCodec, FieldSpec
from mlops_serving.metrics import SCORE_BUCKETS


class ModelLoadError(RuntimeError):
    """A model version could not be resolved, downloaded, loaded or smoke-tested."""


class ModelNotFound(ModelLoadError):
    """The ref names no model version, alias or bundle (the caller's mistake, not an outage)."""


TASKS = ("binary", "multiclass", "regression")


def task_of(
    spec: dict[str, Any], booster: Any, what: str
) -> tuple[str, tuple[str, ...], tuple[float, ...]]:
    """The task, classes and score buckets from the feature spec, checked against the booster
    (a spec without a task is a binary model from before the contract files)."""
    task = spec.get("task", "binary")
    if task not in TASKS:
        raise ModelLoadError(f"{what}: feature spec task {task!r} is not one of {TASKS}")
    outputs = booster.num_model_per_iteration()
    classes: tuple[str, ...] = ()
    if task == "multiclass":
        classes = tuple(str(c) for c in spec.get("classes") or ())
        if len(classes) < 3 or len(set(classes)) != len(classes):
            raise ModelLoadError(f"{what}: a multiclass feature spec lists 3+ distinct classes")
    if outputs != (len(classes) if task == "multiclass" else 1):
        raise ModelLoadError(
            f"{what}: the booster has {outputs} outputs per row, a {task} model with "
            f"{len(classes) or 1} needs that many; the spec and the booster disagree"
        )
    if task != "regression":
        return task, classes, SCORE_BUCKETS
    buckets = spec.get("score_buckets")
    if (
        not isinstance(buckets, list)
        or not buckets
        or not all(type(b) in (int, float) and math.isfinite(b) for b in buckets)
        or any(a >= b for a, b in itertools.pairwise(buckets))
    ):
        raise ModelLoadError(
            f"{what}: a regression feature spec needs score_buckets (ascending numbers, the "
            f"quantiles of its training predictions), not {buckets!r}; retrain it with the "
            "current pipeline"
        )
    return task, classes, tuple(float(b) for b in buckets)


def plausible_outputs(task: str, output: np.ndarray, classes: int) -> bool:
    if not np.isfinite(output).all():
        return False
    if task == "regression":
        return output.shape == (1,)
    if task == "binary":
        return output.shape == (1,) and 0.0 <= float(output[0]) <= 1.0
    return (
        output.shape == (1, classes)
        and bool(((output >= 0.0) & (output <= 1.0)).all())
        and math.isclose(float(output.sum()), 1.0, rel_tol=1e-9)
    )


def feature_codec(spec: dict[str, Any], signature: list[dict[str, Any]]) -> FeatureCodec:
    """The request codec for a model: fields in the signature's order, kinds and vocabularies
    from its feature spec."""
    kinds = {f["name"]: f for f in spec["features"]}
    order = [s["name"] for s in signature] or list(kinds)
    if set(order) != set(kinds):
        raise ModelLoadError("model signature and feature spec name different columns")
    fields = []
    for name in order:
        feature = kinds[name]
        vocabulary = None
        if feature["kind"] == "category":
            vocabulary = {c: float(i) for i, c in enumerate(feature["categories"])}
        if feature["kind"] not in KINDS:
            raise ModelLoadError(f"feature {name!r} has kind {feature['kind']!r}, not in {KINDS}")
        training, expected = feature.get("training_range"), feature.get("expected_range")
        fields.append(
            FieldSpec(
                name,
                feature["kind"],
                vocabulary,
                minimum=_bound(feature.get("minimum")),
                maximum=_bound(feature.get("maximum")),
                training_range=(float(training["min"]), float(training["max"]))
                if training
                else None,
                expected_range=(_bound(expected.get("min")), _bound(expected.get("max")))
                if expected
                else None,
                nullable=bool(feature.get("nullable", False)),
                unseen=feature.get("unseen", "reject"),
                description=str(feature.get("description") or ""),
            )
        )
    return FeatureCodec(fields)


KINDS = ("integer", "float", "category", "boolean")


def _bound(value: Any) -> float | None:
    return None if value is None else float(value)
