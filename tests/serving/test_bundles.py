"""Bundles in the local model store, on a real service process: a bundle whose manifest lacks a
field fails its load with a named error and the loaded model keeps serving (also when the
bundle is broken at start-up: the loader keeps trying), and a model whose feature spec has no
training range is served with the contract's limits only, which /model/info says."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest
from tests.service_process import Service
from tests.serving.conftest import MODEL

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

FEATURE_NAMES = load_contract("churn").feature_names

pytestmark = pytest.mark.serving

REF = "bundle:current"


def _record() -> dict[str, Any]:
    frame = plain_values(generate_churn(1, seed=8).loc[:, list(FEATURE_NAMES)])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in frame.iloc[0].items()}


def _put_bundle(
    store: Path,
    registry: str,
    version: str,
    *,
    drop: tuple[str, ...] = (),
    without_training_range: bool = False,
) -> None:
    """Write ``store/current`` as the release builder would (then swap it in by renames), with
    manifest fields dropped or the training ranges removed from the feature spec."""
    staging = store / f".staging-{version}-{time.monotonic_ns()}"
    mlflow.set_tracking_uri(registry)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL}/{version}", dst_path=str(staging / "download")
        )
    )
    local.rename(staging / "model")
    shutil.rmtree(staging / "download", ignore_errors=True)
    if without_training_range:
        (spec_path,) = (staging / "model").rglob("feature_spec.json")
        spec = json.loads(spec_path.read_text())
        for feature in spec["features"]:
            feature.pop("training_range", None)
        spec_path.write_text(json.dumps(spec))
    files = {
        path.relative_to(staging).as_posix(): {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": path.stat().st_size,
        }
        for path in sorted((staging / "model").rglob("*"))
        if path.is_file()
    }
    manifest = {"format": 1, "model_name": MODEL, "version": version, "run_id": "",
                "model_dir": "model", "files": files}  # fmt: skip
    for field in drop:
        del manifest[field]
    (staging / "manifest.json").write_text(json.dumps(manifest))
    current = store / "current"
    if current.exists():
        current.rename(store / f".old-{time.monotonic_ns()}")
    staging.rename(current)


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_manifest_without_a_field_fails_the_reload_and_the_old_model_keeps_serving(
    registry: str, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    _put_bundle(tmp_path, registry, "1")
    service = start_service(registry, SERVING_MODEL_STORE=str(tmp_path), SERVING_STABLE_ALIAS=REF)
    _put_bundle(tmp_path, registry, "2", drop=("version",))
    with service.admin() as admin, service.client() as http:
        response = admin.post("/admin/reload", json={"variant": "stable"})
        assert response.status_code == 502
        detail = response.json()["detail"]
        assert detail.startswith("reload failed, still serving the previous model: ")
        assert "manifest.json lacks the field 'version'" in detail
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["stable"] == "1"
        assert "lacks the field 'version'" in ready.json()["last_errors"]["stable"]
        served = http.post("/predict", json={"features": _record()})
        assert served.status_code == 200 and served.json()["model_version"] == "1"

        _put_bundle(tmp_path, registry, "2")
        reloaded = admin.post("/admin/reload", json={"variant": "stable"})
        assert reloaded.status_code == 200 and reloaded.json()["stable"] == "2"
        assert http.get("/ready").json()["last_errors"] == {}


def test_the_loader_keeps_trying_after_a_broken_bundle_at_start(
    registry: str, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    _put_bundle(tmp_path, registry, "1", drop=("files",))
    service = start_service(
        registry, wait_ready=False, SERVING_MODEL_STORE=str(tmp_path), SERVING_STABLE_ALIAS=REF
    )
    with service.client() as http:
        _wait_for("the load error", lambda: "stable" in http.get("/ready").json()["last_errors"])
        ready = http.get("/ready")
        assert ready.status_code == 503
        assert "manifest.json lacks the field 'files'" in ready.json()["last_errors"]["stable"]
        _put_bundle(tmp_path, registry, "1")
        _wait_for("the retried load", lambda: http.get("/ready").status_code == 200)
        assert http.get("/ready").json()["stable"] == "1"


def test_without_a_training_range_or_a_registry_the_service_says_so(
    registry: str, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    from mlflow_server import free_port

    _put_bundle(tmp_path, registry, "1", without_training_range=True)
    service = start_service(
        f"http://127.0.0.1:{free_port()}",  # no registry there
        SERVING_MODEL_STORE=str(tmp_path),
        SERVING_STABLE_ALIAS=REF,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="2",
    )
    with service.client() as http:
        info = http.get("/model/info").json()["stable"]
        assert info["version"] == "1"
        assert info["input_checks"]["training_range"].startswith("off: this model's feature spec")
        assert info["aliases"] is None
        assert info["aliases_error"].startswith("cannot read the aliases from the model registry")
        record = {**_record(), "avg_monthly_gb": 1999.0}  # within the contract, rarely seen
        assert http.post("/predict", json={"features": record}).status_code == 200
        impossible = http.post("/predict", json={"features": {**record, "tenure_months": -1}})
        assert impossible.status_code == 422
        assert "serving_out_of_range_total{" not in http.get("/metrics").text
