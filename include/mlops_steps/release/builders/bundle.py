"""The ``bundle`` builder: the model, fetched into the local model store (no Docker engine needed).

The version's MLflow model directory is downloaded into ``$MLOPS_HOME/model-store/<tag>/`` (the
tag is ``v<version>-<sha12>``), which the model service loads with ``SERVING_MODEL_STORE`` set to
the store and the ref ``bundle:<tag>``. Layout::

    v7-1a2b3c4d5e6f/
      manifest.json     # below
      model/            # the MLflow model directory exactly as downloaded, e.g.
        MLmodel  churn_pyfunc.py  artifacts/booster.txt  artifacts/feature_spec.json
        requirements.txt  python_env.yaml  conda.yaml  input_example.json ...

``manifest.json`` (``"format": 1``; keys are stable, readers ignore unknown ones)::

    {"format": 1, "model_name": "churn", "version": "7", "run_id": "...",
     "code_sha": "...", "image_ref": "...:v7-1a2b3c4d5e6f", "created_at": "...Z",
     "source_uri": "models:/churn/7", "model_dir": "model",
     "files": {"model/MLmodel": {"sha256": "<hex>", "size": 123}, ...}}

``files`` lists every file of the bundle except the manifest, by path relative to the bundle.
The model service reads bundles with its own code (``load_bundle`` in
``serving/mlops_serving/model.py``; it does not import the steps), so this format is a contract
between the two: change both, or neither.

The bundle is written into a temporary directory beside it and renamed into place, so a reader
sees a whole bundle or none; a bundle that fails :func:`verify_bundle` is built again. In an
object store (``MLOPS_MODEL_STORE=s3://...``) the bundle is built in a working copy and put with
its manifest last (common/dataplane.py): the manifest lists every file, so it commits the bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_steps.common.storage import sha256_file
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings
from mlops_steps.release.builders.base import BuildRequest, Built, utc_now

log = logging.getLogger("mlops_steps")

MANIFEST = "manifest.json"
MODEL_DIR = "model"
MANIFEST_FORMAT = 1


def _file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``root``, by POSIX path relative to it."""
    return {
        path.relative_to(root).as_posix(): {
            "sha256": sha256_file(path),
            "size": path.stat().st_size,
        }
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def verify_bundle(path: Path | str) -> dict[str, Any]:
    """Re-hash every file of a bundle against its manifest; the manifest when all match.

    Raises StepError naming the first file that is missing, changed or not in the manifest.
    """
    bundle = Path(path)
    manifest_path = bundle / MANIFEST
    rebuild = "build it again (mlops-step build-image --version N replaces a broken bundle)"
    if not manifest_path.is_file():
        raise StepError("has no manifest (partial or foreign)", subject=str(bundle), fix=rebuild)
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = manifest["files"]
        model_dir = str(manifest["model_dir"])
        if not isinstance(files, dict) or not files:
            raise ValueError("files is empty")
    except (ValueError, KeyError, TypeError) as exc:
        raise StepError(
            f"is not a bundle manifest ({exc})", subject=str(manifest_path), fix=rebuild
        ) from None
    if f"{model_dir}/MLmodel" not in files:
        raise StepError(f"lists no {model_dir}/MLmodel", subject=str(manifest_path), fix=rebuild)
    root = bundle.resolve()
    for relative, expected in sorted(files.items()):
        target = (bundle / relative).resolve()
        if Path(relative).is_absolute() or not target.is_relative_to(root):
            raise StepError(
                "points outside the bundle", subject=f"{manifest_path}: {relative}", fix=rebuild
            )
        if not target.is_file():
            raise StepError("is missing", subject=str(bundle / relative), fix=rebuild)
        size = target.stat().st_size
        if size != expected.get("size") or sha256_file(target) != expected.get("sha256"):
            raise StepError(
                f"does not match the manifest (size {size}, expected {expected.get('size')}; "
                "or its sha256 differs)",
                subject=str(bundle / relative),
                fix=rebuild,
            )
    for extra in sorted(bundle.rglob("*")):
        relative = extra.relative_to(bundle).as_posix()
        if extra.is_file() and relative != MANIFEST and relative not in files:
            raise StepError("is not in the manifest", subject=str(extra), fix=rebuild)
    return manifest


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One builder per bundle at a time (a second one then finds the finished bundle)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class BundleBuilder:
    """Bundles in the model store of the settings. The bundle on disk is the proof of a build
    (re-verified every time: a broken one is replaced), not the record on the model version."""

    remote = False

    def __init__(self, settings: Settings) -> None:
        self.location = settings.model_store_location
        self.store = settings.model_store

    def build(self, request: BuildRequest) -> Built:
        if self.location.startswith("s3://"):
            return self._build_in_object_store(request)
        target = self.store / request.tag
        self.store.mkdir(parents=True, exist_ok=True)
        with _locked(self.store / f".{target.name}.lock"):
            manifest = _usable_bundle(target, request)
            built_now = manifest is None
            if manifest is None:
                for stale in self.store.glob(f".{target.name}.*-*"):  # a crashed build's leftovers
                    shutil.rmtree(stale, ignore_errors=True)
                manifest = _write_bundle(target, request)
        log.info(
            "%s v%s: bundle %s (%s)",
            request.model_name,
            request.version,
            target,
            "built" if built_now else "found",
        )
        return Built(built_now=built_now, built_at=manifest["created_at"], bundle_path=str(target))

    def _build_in_object_store(self, request: BuildRequest) -> Built:
        """The bundle in the store when a sound one is there, else built in a working copy and
        published (overlapping attempts put the same files; each manifest names what it lists)."""
        from mlops_steps.common.dataplane import ObjectStorePlane

        with tempfile.TemporaryDirectory(prefix="mlops-bundle-") as working:
            store = ObjectStorePlane(self.location, Path(working))
            target = Path(working) / request.tag
            store.fetch_dir(target, committed=True)
            manifest = _usable_bundle(target, request)
            built_now = manifest is None
            if manifest is None:
                shutil.rmtree(target, ignore_errors=True)
                manifest = _write_bundle(target, request)
                store.publish()
        uri = f"{self.location.rstrip('/')}/{request.tag}"
        log.info(
            "%s v%s: bundle %s (%s)",
            request.model_name,
            request.version,
            uri,
            "built" if built_now else "found",
        )
        return Built(built_now=built_now, built_at=manifest["created_at"], bundle_path=uri)


def _usable_bundle(target: Path, request: BuildRequest) -> dict[str, Any] | None:
    """The manifest of a sound bundle of exactly this request at ``target``, else None."""
    if not target.exists():
        return None
    try:
        manifest = verify_bundle(target)
    except StepError as exc:
        log.warning("rebuilding the bundle: %s", exc)
        return None
    found = (manifest.get("model_name"), str(manifest.get("version")), manifest.get("image_ref"))
    if found != (request.model_name, request.version, request.ref):
        log.warning("rebuilding %s: its manifest names %s", target, found)
        return None
    return manifest


def _model_root(downloaded: Path) -> Path:
    """The directory holding ``MLmodel`` (the download itself, or its single subdirectory)."""
    if (downloaded / "MLmodel").is_file():
        return downloaded
    candidates = [p.parent for p in downloaded.rglob("MLmodel")]
    if len(candidates) != 1:
        raise StepError(
            f"the downloaded model has {len(candidates)} MLmodel files, expected one",
            subject=str(downloaded),
            fix="register an MLflow model (the training pipeline logs one per run)",
        )
    return candidates[0]


def _write_bundle(target: Path, request: BuildRequest) -> dict[str, Any]:
    """Download, hash and swap in a new bundle at ``target``; its manifest."""
    import mlflow.artifacts

    source = f"models:/{request.model_name}/{request.version}"
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        download = tmp / "download"
        download.mkdir()
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(download))
        )
        _model_root(local).rename(tmp / MODEL_DIR)
        shutil.rmtree(download, ignore_errors=True)
        manifest = {
            "format": MANIFEST_FORMAT,
            "model_name": request.model_name,
            "version": request.version,
            "run_id": request.run_id,
            "code_sha": request.code_sha,
            "image_ref": request.ref,
            "created_at": utc_now(),
            "source_uri": source,
            "model_dir": MODEL_DIR,
            "files": {
                f"{MODEL_DIR}/{relative}": entry
                for relative, entry in _file_entries(tmp / MODEL_DIR).items()
            },
        }
        with (tmp / MANIFEST).open("w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        old = None
        if target.exists():  # a broken bundle: move it aside, swap, then delete it
            old = target.rename(target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
