"""``score-batch`` with its input and output on S3, against a real S3-compatible server (moto's, on
loopback) and versions trained by the real steps: outputs equal the booster's predictions, the
manifest's rows and sha256 are those of the objects, a run is invisible until its manifest is
put, a re-run replaces nothing, and what the operator must fix (no credentials, no such bucket
or key, access denied) is a named error with the URI and the fix, exit 2, nothing left behind."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.settings import load_settings
from mlops_steps.scoring import batch
from mlops_steps.scoring.batch import ScoredRunConflict, run_score_batch
from mlops_steps.scoring.model import ScoringModel
from tests.steps.scoring.support import ID_COLUMN, Versions, booster_scores, score, table

EXPORTS, SCORES = "exports", "scores"


@pytest.fixture
def s3(s3_endpoint: str, scoring_env: Versions) -> Any:
    """A client of the loopback S3 with (only) the input and output buckets."""
    import boto3
    import requests

    # moto keeps its state per process, not per server: start from an empty store.
    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client("s3")
    for bucket in (EXPORTS, SCORES):
        client.create_bucket(Bucket=bucket)
    return client


def put_parquet(s3: Any, key: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    s3.put_object(Bucket=EXPORTS, Key=key, Body=buffer.getvalue())


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, tuple[str, Any]]:
    """Every key under the prefix with its ETag and LastModified."""
    found = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in found}


def s3_run(s3: Any, prefix: str, run: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The run's rows read as a reader would (through its manifest), each part's bytes checked
    against the manifest's sha256, size and row count."""
    base = f"{prefix}/run={run}"
    manifest = json.loads(s3.get_object(Bucket=SCORES, Key=f"{base}/manifest.json")["Body"].read())
    frames = []
    for part in manifest["files"]:
        payload = s3.get_object(Bucket=SCORES, Key=f"{base}/{part['path']}")["Body"].read()
        assert hashlib.sha256(payload).hexdigest() == part["sha256"]
        assert len(payload) == part["bytes"]
        assert pq.ParquetFile(io.BytesIO(payload)).metadata.num_rows == part["rows"]
        frames.append(pd.read_parquet(io.BytesIO(payload)))
    # Nothing under the run but its manifest and the parts it names.
    named = {f"{base}/manifest.json", *(f"{base}/{p['path']}" for p in manifest["files"])}
    assert set(objects(s3, SCORES, f"{base}/")) == named
    return pd.concat(frames, ignore_index=True), manifest


def assert_scored_like_the_booster(scored: pd.DataFrame, frame: pd.DataFrame) -> None:
    assert list(scored.columns) == [ID_COLUMN, "model_version", "score"]
    assert scored[ID_COLUMN].tolist() == frame[ID_COLUMN].astype(str).tolist()
    assert set(scored["model_version"].astype(str)) == {"1"}
    assert np.array_equal(scored["score"].to_numpy(), booster_scores("1", frame))  # bit for bit


def test_s3_tables_score_like_the_booster_into_s3(s3: Any, tmp_path: Path) -> None:
    parts = [table(rows, seed) for seed, rows in ((21, 1300), (22, 999), (23, 17))]
    for index, part in enumerate(parts):
        put_parquet(s3, f"churn/2026-11-23/part-{index}.parquet", part)
    whole = pd.concat(parts, ignore_index=True)
    put_parquet(s3, "churn/one.parquet", parts[0])
    s3.put_object(Bucket=EXPORTS, Key="churn/one.csv", Body=parts[1].to_csv(index=False).encode())

    output = f"s3://{SCORES}/churn"
    assert score("prefix", f"s3://{EXPORTS}/churn/2026-11-23/", output, "--chunk-rows", "700") == 0
    assert score("file", f"s3://{EXPORTS}/churn/one.parquet", output) == 0
    assert score("csv", f"s3://{EXPORTS}/churn/one.csv", output, "--chunk-rows", "500") == 0
    # S3 in, local out: the same outputs.
    assert score("local", f"s3://{EXPORTS}/churn/one.parquet", tmp_path / "scores") == 0

    for run, frame, chunks in (("prefix", whole, 4), ("file", parts[0], 1), ("csv", parts[1], 2)):
        scored, manifest = s3_run(s3, "churn", run)
        assert_scored_like_the_booster(scored, frame)
        assert manifest["rows"] == len(frame) and manifest["chunks"] == chunks, run
    _, manifest = s3_run(s3, "churn", "prefix")
    assert manifest["input"] | {"bytes": 0} == {
        "uri": f"s3://{EXPORTS}/churn/2026-11-23/", "path": f"s3://{EXPORTS}/churn/2026-11-23",
        "format": "parquet", "files": 3, "bytes": 0,
    }  # fmt: skip
    local = tmp_path / "scores" / "run=local"
    local_manifest = json.loads((local / "manifest.json").read_text())
    scored = pd.concat([pd.read_parquet(local / f["path"]) for f in local_manifest["files"]])
    assert_scored_like_the_booster(scored.reset_index(drop=True), parts[0])
    # Only the runs' keys are in the output bucket: no staging objects, no leftovers.
    assert {key.split("/")[1] for key in objects(s3, SCORES)} == {
        "run=prefix", "run=file", "run=csv"
    }  # fmt: skip


def _policy(source: str, **extra: Any) -> BatchScoringPolicy:
    return BatchScoringPolicy(input_uri=source, output_uri=f"s3://{SCORES}/churn", **extra)


def test_an_s3_rerun_replaces_nothing_and_failed_attempts_leftovers_go(s3: Any) -> None:
    put_parquet(s3, "churn/day.parquet", table(1200, seed=8))
    source = f"s3://{EXPORTS}/churn/day.parquet"
    key = "20261124T000000"  # not test_score_batch's key: lineage runs are searched by key
    leftover = f"churn/run={key}/part-00000-deadpod-7.parquet"  # an attempt that died
    s3.put_object(Bucket=SCORES, Key=leftover, Body=b"half a part")

    first = run_score_batch(load_settings(), key, _policy(source, chunk_rows=500))
    assert first["already_complete"] is False and first["rows"] == 1200
    assert first["output"] == f"s3://{SCORES}/churn/run={key}"
    before = objects(s3, SCORES)
    assert leftover not in before  # the complete run swept what the dead attempt left
    s3_run(s3, "churn", key)

    again = run_score_batch(load_settings(), key, _policy(source, chunk_rows=500))
    assert again == {**first, "already_complete": True}
    assert objects(s3, SCORES) == before  # same keys, ETags and times: nothing rewritten
    with pytest.raises(ScoredRunConflict, match="was scored completely"):
        run_score_batch(load_settings(), key, _policy(source, model_ref="2"))
    assert objects(s3, SCORES) == before


def _hook_on_chunk(monkeypatch: pytest.MonkeyPatch, at: int, action: Any) -> None:
    """Run ``action`` while the run scores its ``at``-th chunk (1-based)."""
    real = ScoringModel.outputs
    calls = [0]

    def outputs(self: ScoringModel, frame: Any, contract: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            action()
        return real(self, frame, contract)

    monkeypatch.setattr(ScoringModel, "outputs", outputs)


def test_an_s3_run_is_invisible_until_its_manifest_and_a_failed_one_leaves_nothing(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_parquet(s3, "churn/day.parquet", table(2000, seed=9))
    source = f"s3://{EXPORTS}/churn/day.parquet"
    monkeypatch.setattr(batch, "PART_ROWS", 500)  # a part per chunk: parts complete early
    seen: list[set[str]] = []

    def crash() -> None:
        seen.append(set(objects(s3, SCORES)))
        raise RuntimeError("the pod is evicted")

    _hook_on_chunk(monkeypatch, 4, crash)
    with pytest.raises(RuntimeError, match="evicted"):
        run_score_batch(load_settings(), "k", _policy(source, chunk_rows=500))
    # Mid-run, two complete parts (the third being written) but no manifest: no run to read.
    assert len(seen[0]) == 2 and all(".parquet" in key for key in seen[0])
    assert objects(s3, SCORES) == {}  # the failed attempt removed its parts


def test_an_attempt_that_loses_the_commit_keeps_the_winners_run(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_parquet(s3, "churn/day.parquet", table(1500, seed=10))
    source = f"s3://{EXPORTS}/churn/day.parquet"
    winner = run_score_batch(load_settings(), "k", _policy(source, chunk_rows=500))
    manifest_key = "churn/run=k/manifest.json"
    committed = s3.get_object(Bucket=SCORES, Key=manifest_key)["Body"].read()
    s3.delete_object(Bucket=SCORES, Key=manifest_key)  # the winner has not committed yet
    winners_parts = objects(s3, SCORES)

    def winner_commits() -> None:
        s3.put_object(Bucket=SCORES, Key=manifest_key, Body=committed)

    _hook_on_chunk(monkeypatch, 3, winner_commits)
    loser = run_score_batch(load_settings(), "k", _policy(source, chunk_rows=500))
    assert loser["mlflow_run_id"] == winner["mlflow_run_id"] and loser["rows"] == 1500
    assert s3.get_object(Bucket=SCORES, Key=manifest_key)["Body"].read() == committed
    # The loser's parts are gone; the winner's are untouched.
    assert objects(s3, SCORES).keys() == winners_parts.keys() | {manifest_key}
    s3_run(s3, "churn", "k")


#: Everywhere the SDK's chain finds credentials (but files and instance metadata, set below).
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)  # fmt: skip


def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


DAY, OUT = "s3://exports/churn/day.parquet", "s3://scores/churn"


#: case: (input, output, the error's subject, what it says)
NAMED_FAILURES = {
    "no_credentials": (DAY, OUT, OUT, "no AWS credentials found"),
    "no_input_bucket": ("s3://nobucket/churn/day.parquet", OUT,
                        "s3://nobucket/churn/day.parquet", "bucket 'nobucket' does not exist"),
    "no_input_key": ("s3://exports/churn/missing.parquet", OUT,
                     "s3://exports/churn/missing.parquet", "no such file, directory or prefix"),
    "no_output_bucket": (DAY, "s3://nobucket/churn", "s3://nobucket/churn",
                         "bucket 'nobucket' does not exist"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NAMED_FAILURES))
def test_what_the_operator_must_fix_is_named_with_the_uri(
    case: str,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, output, subject, named = NAMED_FAILURES[case]
    put_parquet(s3, "churn/day.parquet", table(300, seed=3))
    if case == "no_credentials":
        _no_credentials(monkeypatch, tmp_path)
    caplog.set_level(logging.INFO, logger="mlops_steps")
    assert score(case, source, output) == 2
    assert f"{subject}: {named}" in caplog.text and "Fix:" in caplog.text
    assert objects(s3, SCORES) == {}


def test_access_denied_is_named_and_keys_are_never_logged(
    s3: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user that may read (not write) the exports and the scores and nothing else: writing
    the scores and reading a third bucket are refused by the server's IAM, each named; the
    keys appear in no log line."""
    import boto3
    from moto.core.authorization import enable_iam_authentication

    put_parquet(s3, "churn/day.parquet", table(300, seed=3))
    s3.create_bucket(Bucket="private")
    iam = boto3.client("iam")
    iam.create_user(UserName="reader")
    read_only = {
        "Effect": "Allow",
        # s3:HeadBucket: moto's name for HEAD on a bucket (AWS asks for s3:ListBucket).
        "Action": ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"],
        "Resource": [f"arn:aws:s3:::{b}{k}" for b in (EXPORTS, SCORES) for k in ("", "/*")],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [read_only]}))  # fmt: skip
    keys = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["SecretAccessKey"])
    caplog.set_level(logging.DEBUG, logger="mlops_steps")
    with enable_iam_authentication():
        assert score("write", f"s3://{EXPORTS}/churn/day.parquet", f"s3://{SCORES}/churn") == 2
        assert f"s3://{SCORES}/churn/run=write" in caplog.text
        assert score("read", "s3://private/churn/day.parquet", tmp_path / "out") == 2
        assert "s3://private/churn/day.parquet: access denied" in caplog.text
    assert caplog.text.count("access denied") >= 2 and "Fix: grant" in caplog.text
    assert keys["SecretAccessKey"] not in caplog.text
    assert keys["AccessKeyId"] not in caplog.text
    assert objects(s3, SCORES) == {} and not (tmp_path / "out").exists()
