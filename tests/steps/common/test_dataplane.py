"""The data plane on an object store (``MLOPS_DATA_ROOT=s3://...``), against a real S3-compatible
server on loopback (moto's): the steps run through ``mlops-step`` exactly as a worker runs them;
a partition is visible only once its manifest is there, a store that does not answer is a named,
retryable error that leaves no readable partition behind, and the ledger's entries are written
once under concurrent release attempts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_steps.cli.main import main
from mlops_steps.common import dataplane
from mlops_steps.core.errors import EXIT_CRASH, EXIT_OK, EXIT_REJECTED
from mlops_steps.core.settings import load_settings
from mlops_steps.release.ledger import PROMOTED, read_ledger, record_decision
from tests.steps.release.ledger_support import Registry, race

BUCKET, KEY = "plane", "20260105T000000"
PARTITION = f"pipeline/churn/partition={KEY}"


@pytest.fixture
def store(s3_endpoint: str, mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty bucket as the data root; a client to look inside it."""
    import boto3
    import requests

    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("MLOPS_DATA_ROOT", f"s3://{BUCKET}/pipeline")
    return client


def keys(client: Any, prefix: str = "") -> dict[str, str]:
    found = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in found}


def ingest(*extra: str) -> int:
    return main(["ingest", "--partition", KEY, "--rows", "3000", *extra])


def result_of(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("MLOPS_RESULT ")][-1]
    return dict(json.loads(line.removeprefix("MLOPS_RESULT ")))


def test_ingest_publishes_data_then_manifest_and_reruns_change_nothing(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ingest() == EXIT_OK
    first = result_of(capsys)
    objects = keys(store, PARTITION)
    assert set(objects) == {f"{PARTITION}/data.parquet", f"{PARTITION}/manifest.json"}
    manifest = json.loads(
        store.get_object(Bucket=BUCKET, Key=f"{PARTITION}/manifest.json")["Body"].read()
    )
    assert manifest["file_sha256"] == first["file_sha256"]
    # What the store keeps names places in the store, never a process's working copy.
    assert "mlops-scratch" not in json.dumps(manifest)
    assert not load_settings().data_root.exists()  # the working copy goes with the process
    # What the step reports names the store, not its process's working copy.
    assert first["path"] == f"s3://{BUCKET}/{PARTITION}/data.parquet"

    # The same logical date again: read back from the store, found unchanged, nothing re-put.
    assert ingest() == EXIT_OK
    assert result_of(capsys)["unchanged"] is True
    assert keys(store, PARTITION) == objects


def test_data_without_a_manifest_is_never_read(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An interrupted publish leaves data but no manifest: the partition does not exist for a
    reader (a named 'run ingest' refusal), however complete the data object looks."""
    assert ingest() == EXIT_OK
    store.delete_object(Bucket=BUCKET, Key=f"{PARTITION}/manifest.json")
    assert main(["train", "--partition", KEY]) == EXIT_REJECTED
    assert (
        f"s3://{BUCKET}/{PARTITION}/manifest.json: not found Fix: run the 'ingest' step for this "
        "partition first" in caplog.text
    )
    assert "not committed, not read" in caplog.text


def test_an_unreachable_store_is_a_named_retryable_error(
    store: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, s3_endpoint: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", down)
    assert ingest() == EXIT_CRASH  # exit 1: Airflow retries the task
    assert "Traceback" not in caplog.text
    assert "the object store did not answer while listing" in caplog.text
    assert "a retry may succeed" in caplog.text
    assert keys(store) == {}

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert ingest() == EXIT_OK  # the retry completes


def test_a_publish_cut_before_the_manifest_leaves_no_partition(
    store: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The store goes away between the data and the manifest (the manifest is put last): the
    attempt fails as retryable, the data object stays invisible, the retry commits."""
    from botocore.exceptions import EndpointConnectionError

    real_upload = dataplane.ObjectStorePlane.publish

    def cut_before_manifest(self: dataplane.ObjectStorePlane) -> int:
        upload, put = self.store.upload_file, self.store.put_object

        def refuse_manifest(key: str) -> None:
            if key.endswith(dataplane.COMMIT_MARKER):
                raise EndpointConnectionError(endpoint_url="http://store")

        def upload_file(path: str, bucket: str, key: str) -> None:
            refuse_manifest(key)
            upload(path, bucket, key)

        def put_object(**request: Any) -> Any:
            refuse_manifest(request["Key"])
            return put(**request)

        self.store.upload_file, self.store.put_object = upload_file, put_object
        return real_upload(self)

    monkeypatch.setattr(dataplane.ObjectStorePlane, "publish", cut_before_manifest)
    assert ingest() == EXIT_CRASH
    assert set(keys(store, PARTITION)) == {f"{PARTITION}/data.parquet"}
    assert "the object store did not answer while publishing" in caplog.text

    monkeypatch.setattr(dataplane.ObjectStorePlane, "publish", real_upload)
    assert ingest() == EXIT_OK
    assert f"{PARTITION}/manifest.json" in keys(store, PARTITION)


ATTEMPTS, DECISIONS = 4, 6


def _attempt(attempt: int, start: Any) -> None:
    settings = load_settings()
    with dataplane.working_copy(settings):
        for version in range(DECISIONS):
            start.wait()
            record_decision(settings, Registry(), version=str(version), status=PROMOTED,
                            reason="r", extra={"attempt": attempt})  # fmt: skip


def test_concurrent_release_attempts_write_each_ledger_entry_once(store: Any) -> None:
    race(_attempt, ATTEMPTS, timeout=120)

    entries_in_store = keys(store, "pipeline/ledger/churn-deployments/")
    assert len(entries_in_store) == DECISIONS
    settings = load_settings()
    with dataplane.working_copy(settings):
        entries = read_ledger(settings)
        assert not settings.ledger_path.exists()  # nothing of the ledger is a local file
    assert sorted(int(e["version"]) for e in entries) == list(range(DECISIONS))
    assert {e["decision"] for e in entries} == {PROMOTED}


def test_no_credentials_is_a_named_refusal_not_a_retry(store: Any, tmp_path: Path) -> None:
    """A step process with no S3 credentials at all (boto3's default session caches them, so
    this one runs as its own process, as a worker runs it)."""
    keys_and_profile = {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
    }
    env = {k: v for k, v in os.environ.items() if k not in keys_and_profile}
    nowhere = str(tmp_path / "none")
    env |= {"AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "mlops_steps", "ingest", "--partition", KEY, "--rows", "1000"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_REJECTED, done.stderr  # exit 2: a retry would only repeat it
    assert f"s3://{BUCKET}/{PARTITION}/: no S3 credentials while listing" in done.stderr
    assert "Traceback" not in done.stderr
    assert keys(store) == {}
