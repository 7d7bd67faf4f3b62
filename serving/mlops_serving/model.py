"""Loading a registered model version, ready to score requests.

The training pipeline logs each model with its native LightGBM booster and a feature spec as
artifacts; the service loads those directly (no pandas or pyfunc on the request path), builds the
request codec (:mod:`mlops_serving.codec`) from the spec and the model signature, and smoke-tests
the model before it serves.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops_serving.bundle_store import BundleFetchError, fetch_bundle, is_object_store
from mlops_serving.codec import FeatureCodec
from mlops_serving.metrics import SCORE_BUCKETS
from mlops_serving.spec import (
    ModelLoadError,
    ModelNotFound,
    feature_codec,
    plausible_outputs,
    task_of,
)

__all__ = ["LoadedModel", "ModelLoadError", "ModelNotFound", "SingleRowPredictor", "load_model"]
# The registry's answers that mean the ref names nothing (not that the registry failed).
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})

log = logging.getLogger(__name__)


class SingleRowPredictor:
    """LightGBM's single-row fast path (the C API's ``FastConfig``).

    ``Booster.predict`` rebuilds its predictor and re-parses its parameters on every call, ~17 µs
    for one row here, more than the rest of the service's own work on a request; the fast path
    sets them up once per model and then costs ~2 µs a row. Scores are identical (checked at
    load). One call at a time per instance: the config holds the row buffer. ``n_outputs``: the
    values one row gets (a multiclass booster: one probability per class).
    """

    def __init__(self, booster: Any, n_features: int, n_outputs: int = 1) -> None:
        from lightgbm import basic  # the C library the booster lives in, and its error check

        self._lib = getattr(basic, "_LIB")  # noqa: B009 (private: not re-exported for mypy)
        self._check = basic._safe_call
        self._config = ctypes.c_void_p()
        self._check(
            self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                # As Booster.predict: up to the best iteration if the model has one, else all.
                ctypes.c_int(int(getattr(booster, "best_iteration", 0) or -1)),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._row = (ctypes.c_double * n_features)()
        self._score = (ctypes.c_double * n_outputs)()
        self._length = ctypes.c_int64(0)
        self._args = (self._config, self._row, ctypes.byref(self._length), self._score)
        self._lock = threading.Lock()

    def __call__(self, values: list[float]) -> float:
        with self._lock:
            self._row[:] = values  # type: ignore[assignment]  # ctypes takes Python floats
            self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(*self._args))
            return float(self._score[0])

    def outputs(self, values: list[float]) -> list[float]:
        """Every output of one row (a multiclass booster's class probabilities)."""
        with self._lock:
            self._row[:] = values  # type: ignore[assignment]
            self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(*self._args))
            return list(self._score)

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            with contextlib.suppress(Exception):  # the library may be gone at interpreter exit
                self._lib.LGBM_FastConfigFree(config)


_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: probabilities (binary, multiclass), values (l2)
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


@dataclass
class LoadedModel:
    """A model version ready to predict, with what /model/info reports about it."""

    name: str
    version: str
    ref: str  # what it was loaded by: an alias or a version number
    run_id: str
    codec: FeatureCodec
    booster: Any
    signature: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    # From the feature spec: what the model predicts and how its answers are shaped.
    task: str = "binary"
    class_labels: tuple[str, ...] = ()  # multiclass: the probability columns' classes
    score_buckets: tuple[float, ...] = SCORE_BUCKETS

    single_row: SingleRowPredictor | None = None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """The booster's outputs: (rows,) for binary and regression, (rows, classes) for
        multiclass."""
        # One thread for small requests: OpenMP start-up costs more than it saves on a few rows.
        threads = 1 if len(matrix) < 2_000 else 0
        return np.asarray(self.booster.predict(matrix, num_threads=threads), dtype=np.float64)

    def predict_one(self, values: list[float]) -> float:
        """The score of one row (from :meth:`FeatureCodec.encode_one`)."""
        if self.single_row is not None:
            return self.single_row(values)
        return float(self.predict(np.asarray([values], dtype=np.float64))[0])

    def predict_proba_one(self, values: list[float]) -> list[float]:
        """A multiclass model's class probabilities for one row, in ``class_labels`` order."""
        if self.single_row is not None:
            return self.single_row.outputs(values)
        return [float(p) for p in self.predict(np.asarray([values], dtype=np.float64))[0]]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "loaded_by": self.ref,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "task": self.task,
            **({"classes": list(self.class_labels)} if self.class_labels else {}),
            "input_checks": self.input_checks(),
            **self.metadata,
        }

    def input_checks(self) -> dict[str, Any]:
        """Which checks requests get beyond types: the contract's limits always (422), the
        training range only if the model's feature spec records it (served, flagged)."""
        if self.codec.checks_training_range:
            training = "values outside it are served, counted in serving_out_of_range_total "
            training += "and flagged in the prediction log"
        else:
            training = (
                "off: this model's feature spec records no training_range (trained before "
                "training logged it); values within the contract's limits are not flagged"
            )
        checks = {"contract_limits": "values beyond them get 422", "training_range": training}
        if self.codec.expected_ranges:
            checks["expected_range"] = (
                f"declared for {', '.join(self.codec.expected_ranges)}: values outside it are "
                "served, counted in serving_out_of_range_total and flagged (it takes precedence "
                "over the training range)"
            )
        return checks


def resolve_version(client: Any, model_name: str, ref: str) -> Any:
    """The model version behind an alias or a version number."""
    try:
        if ref.isdigit():
            return client.get_model_version(model_name, ref)
        return client.get_model_version_by_alias(model_name, ref)
    except Exception as exc:
        missing = getattr(exc, "error_code", None) in _NOT_FOUND_CODES
        error = ModelNotFound if missing else ModelLoadError
        raise error(f"cannot resolve {model_name}@{ref}: {exc}") from exc


BUNDLE_PREFIX = "bundle:"


def load_model(
    client: Any, model_name: str, ref: str, model_store: Path | str | None = None
) -> LoadedModel:
    """Load ``ref``: an alias or version number from the registry, or ``bundle:<dir>`` from the
    model store, a directory or an object store (the embedded stand-in for an image built for
    one version)."""
    if ref.startswith(BUNDLE_PREFIX):
        if isinstance(model_store, str) and is_object_store(model_store):
            with tempfile.TemporaryDirectory(prefix="mlops-bundle-") as tmp:
                try:
                    fetch_bundle(model_store, ref.removeprefix(BUNDLE_PREFIX), Path(tmp))
                except BundleFetchError as exc:
                    raise ModelNotFound(str(exc)) from None
                return load_bundle(client, model_name, ref, Path(tmp))
        return load_bundle(client, model_name, ref, Path(model_store) if model_store else None)
    import mlflow.artifacts

    version = resolve_version(client, model_name, ref)
    try:
        with tempfile.TemporaryDirectory(prefix="mlops-serving-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{model_name}/{version.version}",
                    dst_path=tmp,
                )
            )
            return _load_model_dir(
                local,
                name=model_name,
                version=str(version.version),
                ref=ref,
                run_id=version.run_id or "",
                metadata=_run_metadata(client, version),
            )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load {model_name} v{version.version}: {exc}") from exc


def load_bundle(client: Any, model_name: str, ref: str, model_store: Path | None) -> LoadedModel:
    """Load a bundle from the model store after checking every file against its manifest."""
    if model_store is None:
        raise ModelLoadError(
            f"{ref!r} names a local bundle but SERVING_MODEL_STORE is not set; point it at the "
            "model store the image-build step writes to"
        )
    store = model_store.resolve()
    bundle = (store / ref.removeprefix(BUNDLE_PREFIX)).resolve()
    if bundle.parent != store or not bundle.is_dir():
        raise ModelNotFound(f"{ref!r} is not a bundle directory in the model store {store}")
    manifest = _bundle_manifest(bundle)
    if manifest["model_name"] != model_name:
        raise ModelLoadError(
            f"bundle {bundle.name} holds model {manifest['model_name']!r}, not {model_name!r}"
        )
    for relative, expected in manifest["files"].items():
        digest = expected.get("sha256") if isinstance(expected, dict) else expected
        path = (bundle / relative).resolve()
        if not path.is_relative_to(bundle) or not path.is_file() or _sha256(path) != digest:
            raise ModelLoadError(f"bundle file {path} is missing or does not match its manifest")
    version = str(manifest["version"])
    metadata: dict[str, Any] = {"bundle": bundle.name, "image_ref": manifest.get("image_ref")}
    with contextlib.suppress(Exception):  # lineage is informative; serving does not need it
        metadata = {**_run_metadata(client, client.get_model_version(model_name, version)),
                    **metadata}  # fmt: skip
    try:
        return _load_model_dir(
            bundle / manifest.get("model_dir", "model"),
            name=model_name,
            version=version,
            ref=ref,
            run_id=str(manifest.get("run_id") or ""),
            metadata=metadata,
        )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load bundle {bundle}: {exc}") from exc


# Manifest fields the service needs (release/builders/bundle.py writes them): what each must be.
_MANIFEST_FIELDS = {
    "model_name": ("a model name", lambda v: isinstance(v, str) and v != ""),
    "version": ("a version number", lambda v: type(v) in (str, int) and str(v).isdecimal()),
    "files": ("an object of file hashes", lambda v: isinstance(v, dict) and v != {}),
}


def _bundle_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, or a ModelLoadError naming the field that is missing or wrong."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{bundle}/manifest.json is unreadable: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{bundle}/manifest.json is not a JSON object")
    rebuild = "rebuild the bundle (mlops-step build-image --version N)"
    for name, (expected, valid) in _MANIFEST_FIELDS.items():
        if name not in manifest:
            raise ModelLoadError(f"{bundle}/manifest.json lacks the field {name!r}; {rebuild}")
        if not valid(manifest[name]):
            raise ModelLoadError(
                f"{bundle}/manifest.json field {name!r} is {manifest[name]!r}, not {expected}; "
                f"{rebuild}"
            )
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_model_dir(
    local: Path, *, name: str, version: str, ref: str, run_id: str, metadata: dict[str, Any]
) -> LoadedModel:
    """Booster + feature spec from an MLflow model directory, smoke-tested."""
    import lightgbm
    import yaml

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    artifacts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    if "booster" not in artifacts or "feature_spec" not in artifacts:
        raise ModelLoadError(
            f"{name} v{version} has no native booster and feature spec; "
            "the service serves models logged by the training pipeline"
        )
    booster = lightgbm.Booster(model_file=str(local / artifacts["booster"]["path"]))
    spec = json.loads((local / artifacts["feature_spec"]["path"]).read_text())
    signature = json.loads(mlmodel.get("signature", {}).get("inputs") or "[]")
    codec = feature_codec(spec, signature)
    if booster.num_feature() != len(codec.fields):
        raise ModelLoadError(
            f"booster expects {booster.num_feature()} features, spec has {len(codec.fields)}"
        )
    task, classes, buckets = task_of(spec, booster, f"{name} v{version}")
    model = LoadedModel(
        name=name,
        version=version,
        ref=ref,
        run_id=run_id,
        codec=codec,
        booster=booster,
        signature=signature,
        metadata=metadata,
        task=task,
        class_labels=classes,
        score_buckets=buckets,
    )
    output = model.predict(codec.smoke_row())
    if not plausible_outputs(task, output, len(classes)):
        raise ModelLoadError(f"smoke prediction of v{model.version} returned {output!r}")
    model.single_row = _single_row_predictor(model, output[0])
    return model


def _single_row_predictor(model: LoadedModel, expected: np.ndarray) -> SingleRowPredictor | None:
    """The fast single-row path if it gives the booster's own outputs for the smoke row (every
    class probability of a multiclass model); else None (Booster.predict serves single rows
    too, only slower)."""
    outputs = len(model.class_labels) or 1
    try:
        fast = SingleRowPredictor(model.booster, len(model.codec.fields), outputs)
        got = fast.outputs(model.codec.smoke_row()[0].tolist())
    except Exception as exc:  # a LightGBM without the fast API: slower, not broken
        log.warning("LightGBM single-row fast path unavailable (%s); using Booster.predict", exc)
        return None
    want = np.atleast_1d(expected).tolist()
    if len(got) != len(want) or not all(
        math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) for a, b in zip(got, want, strict=True)
    ):
        log.warning("single-row fast path scored %r, Booster.predict %r; not used", got, want)
        return None
    return fast


def _run_metadata(client: Any, version: Any) -> dict[str, Any]:
    """Lineage for /model/info: data hash, code sha and training time from the training run.
    Not the aliases: they move after the load, so /model/info reads them when asked."""
    meta: dict[str, Any] = {"tags": dict(version.tags or {})}
    if not version.run_id:
        return meta
    try:
        run = client.get_run(version.run_id)
    except Exception:  # lineage is informative; serving does not depend on it
        return meta
    tags = run.data.tags
    meta.update(
        {
            "data_sha256": tags.get("mlops.data_sha256"),
            "code_sha": tags.get("mlops.code_sha"),
            "trained_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.info.start_time / 1000)
            ),
        }
    )
    return meta
