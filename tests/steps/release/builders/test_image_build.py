"""build-image against a real MLflow server: the local bundle backend end to end (download,
manifest, verification, reuse, repair), and the ci and kaniko backends recording their build on
the model version (their remote sides are loopback stand-ins)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_steps.contract.loader import MODELS_DIR_ENV
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import get_settings, load_settings
from mlops_steps.release.build_image import run_build_image
from mlops_steps.release.builders import kaniko
from mlops_steps.release.builders.bundle import verify_bundle
from tests.fake_apis import FakeGitHub, FakeKubernetes
from tests.fixtures.contracts import contract_copy

MODEL = "build_image_churn"
SHA = "89abcdef0123456789abcdef0123456789abcdef"
REF_PREFIX = "ghcr.io/airflow-mlops/serving"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The churn contract under this module's model name."""
    directory = tmp_path_factory.mktemp("build-image-models")
    with pytest.MonkeyPatch.context() as env:
        contract_copy(directory, MODEL, env)
    yield directory


@pytest.fixture(scope="module")
def trained(
    mlflow_server: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One small model trained by the real train step; tests register versions of it."""
    from mlops_steps.core.policies import SourceRequest, TrainParams
    from mlops_steps.training.ingest import run_ingest
    from mlops_steps.training.train import run_train

    with pytest.MonkeyPatch.context() as env:
        env.setenv(MODELS_DIR_ENV, str(models_dir))
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(tmp_path_factory.mktemp("build-image")))
        env.setenv("MLOPS_MODEL_NAME", MODEL)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{MODEL}")
        settings = load_settings()
        run_ingest(settings, "p1", SourceRequest("synthetic://churn", rows=2000, seed=3))
        trained = run_train(settings, "p1", TrainParams(max_rounds=20, early_stopping_rounds=5))
    yield trained["model_uri"]


@pytest.fixture
def registry(
    trained: str,
    mlflow_server: str,
    models_dir: Path,
    mlops_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> MlflowClient:
    monkeypatch.setenv(MODELS_DIR_ENV, str(models_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLOPS_MODEL_NAME", MODEL)
    get_settings.cache_clear()
    return MlflowClient(mlflow_server)


def _new_version(model_uri: str) -> str:
    """A fresh version of the trained model (no image tags yet)."""
    import mlflow

    return str(mlflow.register_model(model_uri, MODEL, await_registration_for=60).version)


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(path).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in path.rglob("*")
    }


def test_bundle_build_verify_reuse_and_repair(trained: str, registry: MlflowClient) -> None:
    version = _new_version(trained)
    settings = load_settings()
    result = run_build_image(settings, version, SHA)
    ref = f"{REF_PREFIX}:v{version}-89abcdef0123"
    bundle = settings.model_store / f"v{version}-89abcdef0123"
    assert result == {
        "model_name": MODEL,
        "version": version,
        "image_ref": ref,
        "backend": "bundle",
        "built_now": True,
        "bundle_path": str(bundle),
        "build_url": None,
        "code_sha": SHA,
    }
    json.dumps(result)

    manifest = verify_bundle(bundle)
    model_version = registry.get_model_version(MODEL, version)
    assert manifest["format"] == 1 and manifest["model_dir"] == "model"
    assert (manifest["model_name"], manifest["version"], manifest["image_ref"]) == (
        MODEL,
        version,
        ref,
    )
    assert manifest["run_id"] == model_version.run_id
    assert manifest["code_sha"] == SHA and manifest["source_uri"] == f"models:/{MODEL}/{version}"
    files = manifest["files"]
    assert {"model/MLmodel", "model/artifacts/booster.txt"} <= set(files)
    booster = bundle / "model/artifacts/booster.txt"
    assert files["model/artifacts/booster.txt"]["size"] == booster.stat().st_size
    tags = model_version.tags
    assert tags["mlops.image.ref"] == ref and tags["mlops.image.backend"] == "bundle"
    assert tags["mlops.image.built_at"] == manifest["created_at"]
    # Nothing but the bundle and its lock beside it (the temporary directory was renamed).
    assert sorted(p.name for p in settings.model_store.iterdir()) == [
        f".{bundle.name}.lock",
        bundle.name,
    ]

    # The bundle is an MLflow model directory: MLflow itself loads and scores it.
    import mlflow.pyfunc
    import pandas as pd

    from mlops_steps.common.columnar import plain_values
    from mlops_steps.contract.loader import load_contract
    from mlops_steps.contract.synthetic import generate_churn

    model = mlflow.pyfunc.load_model(str(bundle / manifest["model_dir"]))
    features = list(load_contract("churn").feature_names)
    # As a request holds them: MLflow's schema check refuses the generator's category columns.
    scores = model.predict(pd.DataFrame(plain_values(generate_churn(rows=3, seed=1)[features])))
    assert len(scores) == 3
    # ... and so does the model service, by the ref the deploy steps hand it.
    from mlops_serving.model import load_bundle

    served = load_bundle(registry, MODEL, f"bundle:{bundle.name}", settings.model_store)
    assert (served.version, served.run_id) == (version, model_version.run_id)

    # Again: found, not rebuilt, not a byte touched.
    before = _tree(bundle)
    again = run_build_image(settings, version, SHA)
    assert again == {**result, "built_now": False}
    assert _tree(bundle) == before

    # A corrupt file: verification names it; the next build replaces the bundle.
    with booster.open("ab") as handle:
        handle.write(b"\n# tampered\n")
    with pytest.raises(StepError) as raised:
        verify_bundle(bundle)
    assert str(raised.value).startswith(f"{booster}: does not match the manifest")
    assert run_build_image(settings, version, SHA)["built_now"] is True
    verify_bundle(bundle)

    # A partial bundle (no manifest: a crash mid-copy by something else) is rebuilt too.
    (bundle / "manifest.json").unlink()
    with pytest.raises(StepError, match="has no manifest"):
        verify_bundle(bundle)
    assert run_build_image(settings, version, SHA)["built_now"] is True
    # An unlisted file is reported, too.
    (bundle / "model" / "extra.txt").write_text("x")
    with pytest.raises(StepError, match=r"extra\.txt: is not in the manifest"):
        verify_bundle(bundle)
    assert sorted(p.name for p in settings.model_store.iterdir()) == [
        f".{bundle.name}.lock",
        bundle.name,
    ]


def test_bundle_in_an_object_store_is_committed_by_its_manifest(
    trained: str,
    registry: MlflowClient,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """MLOPS_MODEL_STORE=s3://...: the bundle's files, then its manifest, in the store (moto's
    server); built once, found by the next build; the service loads it from the store alone."""
    import boto3
    import requests

    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    monkeypatch.setenv("MLOPS_MODEL_STORE", "s3://models/store/{model}")
    version = _new_version(trained)
    settings = load_settings()
    tag = f"v{version}-89abcdef0123"
    prefix = f"store/{MODEL}/{tag}"
    result = run_build_image(settings, version, SHA)
    assert (result["built_now"], result["bundle_path"]) == (True, f"s3://models/{prefix}")
    objects = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="models")["Contents"]}
    manifest = json.loads(
        s3.get_object(Bucket="models", Key=f"{prefix}/manifest.json")["Body"].read()
    )
    assert set(objects) == {
        f"{prefix}/manifest.json",
        *(f"{prefix}/{f}" for f in manifest["files"]),
    }
    assert not settings.model_store.exists() and not Path(f"s3:/models/store/{MODEL}").exists()

    again = run_build_image(settings, version, SHA)
    assert again == {**result, "built_now": False}
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="models")["Contents"]} == objects

    from mlops_serving.model import ModelNotFound, load_model

    store = f"s3://models/store/{MODEL}"
    served = load_model(registry, MODEL, f"bundle:{tag}", store)
    assert (served.version, served.run_id) == (
        version,
        registry.get_model_version(MODEL, version).run_id,
    )
    # Files without a manifest are no bundle: the service refuses them by name.
    s3.delete_object(Bucket="models", Key=f"{prefix}/manifest.json")
    with pytest.raises(ModelNotFound, match=f"cannot fetch bundle s3://models/{prefix}"):
        load_model(registry, MODEL, f"bundle:{tag}", store)


def test_a_missing_or_malformed_version_is_rejected(registry: MlflowClient) -> None:
    settings = load_settings()
    with pytest.raises(StepError) as raised:
        run_build_image(settings, "999", SHA)
    assert raised.value.subject == f"{MODEL} v999"
    assert "does not exist" in str(raised.value) and raised.value.fix
    with pytest.raises(StepError) as raised:
        run_build_image(settings, "latest", SHA)
    assert raised.value.subject == "--version"
    assert not settings.model_store.exists()


def test_ci_build_is_recorded_and_not_repeated(
    trained: str, registry: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _new_version(trained)
    with FakeGitHub() as github:
        monkeypatch.setenv("MLOPS_IMAGE_BUILDER", "ci")
        monkeypatch.setenv("MLOPS_CI_DISPATCH_URL", github.dispatch_url)
        monkeypatch.setenv("MLOPS_CI_POLL_INTERVAL_S", "0.01")
        monkeypatch.setenv("MLOPS_CI_TOKEN", "ghp_secret-token")
        settings = load_settings()
        with pytest.raises(StepError, match="code sha: 'abc-dirty' is not a full commit sha"):
            run_build_image(settings, version, "abc-dirty")
        assert not github.take()

        result = run_build_image(settings, version, SHA)
        assert result["built_now"] is True and result["backend"] == "ci"
        assert result["build_url"] == f"{github.url}/{github.owner_repo}/actions/runs/1000"
        assert result["bundle_path"] is None
        assert [r.method for r in github.take()].count("POST") == 1
        tags = registry.get_model_version(MODEL, version).tags
        assert tags["mlops.image.ref"] == result["image_ref"]
        assert tags["mlops.image.backend"] == "ci"
        assert tags["mlops.image.build_url"] == result["build_url"]

        again = run_build_image(settings, version, SHA)
        assert again == {**result, "built_now": False}
        assert not github.take()  # the registry tag answered; CI was not asked


def test_kaniko_build_is_recorded_and_not_repeated(
    trained: str, registry: MlflowClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    version = _new_version(trained)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kaniko, "KANIKO_POLL_S", 0.01)
    with FakeKubernetes() as cluster:
        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig", "t")))
        monkeypatch.setenv("MLOPS_IMAGE_BUILDER", "kaniko")
        settings = load_settings()
        result = run_build_image(settings, version, SHA)
        assert result["built_now"] is True and result["backend"] == "kaniko"
        (create,) = [r for r in cluster.take() if r.method == "POST"]
        assert (
            create.json["metadata"]["annotations"]["mlops.airflow.apache.org/image-ref"]
            == (result["image_ref"])
        )
        tags = registry.get_model_version(MODEL, version).tags
        assert tags["mlops.image.ref"] == result["image_ref"]
        assert tags["mlops.image.backend"] == "kaniko"

        assert run_build_image(settings, version, SHA) == {**result, "built_now": False}
        assert not cluster.take()
