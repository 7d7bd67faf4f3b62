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

from mlops_serving.codec import FeatureCodec, FieldSpec

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model version could not be resolved, downloaded, loaded or smoke-tested."""


class SingleRowPredictor:
    """LightGBM's single-row fast path (the C API's ``FastConfig``).

    ``Booster.predict`` rebuilds its predictor and re-parses its parameters on every call, ~17 µs
    for one row here, more than the rest of the service's own work on a request; the fast path
    sets them up once per model and then costs ~2 µs a row. Scores are identical (checked at
    load). One call at a time per instance: the config holds the row buffer.
    """

    def __init__(self, booster: Any, n_features: int) -> None:
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
        self._score = (ctypes.c_double * 1)()
        self._length = ctypes.c_int64(0)
        self._args = (self._config, self._row, ctypes.byref(self._length), self._score)
        self._lock = threading.Lock()

    def __call__(self, values: list[float]) -> float:
        with self._lock:
            self._row[:] = values  # type: ignore[assignment]  # ctypes takes Python floats
            self._check(self._lib.LGBM_BoosterPredictForMatSingleRowFast(*self._args))
            return float(self._score[0])

    def __del__(self) -> None:
        config = getattr(self, "_config", None)
        if config is not None and config.value:
            with contextlib.suppress(Exception):  # the library may be gone at interpreter exit
                self._lib.LGBM_FastConfigFree(config)


_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: probabilities for a binary objective
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

    single_row: SingleRowPredictor | None = None

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        # One thread for small requests: OpenMP start-up costs more than it saves on a few rows.
        threads = 1 if len(matrix) < 2_000 else 0
        return np.asarray(self.booster.predict(matrix, num_threads=threads), dtype=np.float64)

    def predict_one(self, values: list[float]) -> float:
        """The score of one row (from :meth:`FeatureCodec.encode_one`)."""
        if self.single_row is not None:
            return self.single_row(values)
        return float(self.predict(np.asarray([values], dtype=np.float64))[0])

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "loaded_by": self.ref,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            **self.metadata,
        }


def resolve_version(client: Any, model_name: str, ref: str) -> Any:
    """The model version behind an alias or a version number."""
    try:
        if ref.isdigit():
            return client.get_model_version(model_name, ref)
        return client.get_model_version_by_alias(model_name, ref)
    except Exception as exc:
        raise ModelLoadError(f"cannot resolve {model_name}@{ref}: {exc}") from exc


BUNDLE_PREFIX = "bundle:"


def load_model(
    client: Any, model_name: str, ref: str, model_store: Path | None = None
) -> LoadedModel:
    """Load ``ref``: an alias or version number from the registry, or ``bundle:<dir>`` from the
    local model store (the embedded stand-in for an image built for one version)."""
    if ref.startswith(BUNDLE_PREFIX):
        return load_bundle(client, model_name, ref, model_store)
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
        raise ModelLoadError(f"{ref!r} is not a bundle directory in the model store {store}")
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{bundle}/manifest.json is unreadable: {exc}") from None
    if manifest.get("model_name") != model_name:
        raise ModelLoadError(
            f"bundle {bundle.name} holds model {manifest.get('model_name')!r}, not {model_name!r}"
        )
    for relative, expected in manifest.get("files", {}).items():
        digest = expected["sha256"] if isinstance(expected, dict) else expected
        path = bundle / relative
        if not path.is_file() or _sha256(path) != digest:
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
    codec = _feature_codec(spec, signature)
    if booster.num_feature() != len(codec.fields):
        raise ModelLoadError(
            f"booster expects {booster.num_feature()} features, spec has {len(codec.fields)}"
        )
    model = LoadedModel(
        name=name,
        version=version,
        ref=ref,
        run_id=run_id,
        codec=codec,
        booster=booster,
        signature=signature,
        metadata=metadata,
    )
    score = model.predict(codec.smoke_row())
    if score.shape != (1,) or not (0.0 <= float(score[0]) <= 1.0):
        raise ModelLoadError(f"smoke prediction of v{model.version} returned {score!r}")
    model.single_row = _single_row_predictor(model, float(score[0]))
    return model


def _feature_codec(spec: dict[str, Any], signature: list[dict[str, Any]]) -> FeatureCodec:
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
        fields.append(FieldSpec(name, feature["kind"], vocabulary))
    return FeatureCodec(fields)


def _single_row_predictor(model: LoadedModel, expected: float) -> SingleRowPredictor | None:
    """The fast single-row path if it gives the booster's own score for the smoke row; else
    None (Booster.predict serves single rows too, only slower)."""
    try:
        fast = SingleRowPredictor(model.booster, len(model.codec.fields))
        score = fast(model.codec.smoke_row()[0].tolist())
    except Exception as exc:  # a LightGBM without the fast API: slower, not broken
        log.warning("LightGBM single-row fast path unavailable (%s); using Booster.predict", exc)
        return None
    if not math.isclose(score, expected, rel_tol=1e-12, abs_tol=1e-15):
        log.warning("single-row fast path scored %r, Booster.predict %r; not used", score, expected)
        return None
    return fast


def _run_metadata(client: Any, version: Any) -> dict[str, Any]:
    """Lineage for /model/info: data hash, code sha and training time from the training run."""
    aliases = list(getattr(version, "aliases", []) or [])
    meta: dict[str, Any] = {"aliases": aliases, "tags": dict(version.tags or {})}
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
