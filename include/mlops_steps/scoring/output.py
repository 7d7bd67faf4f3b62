"""Where a scored run's files go, published so that a reader never sees half a run.

``<output>/run=<key>/`` holds Parquet parts and a ``manifest.json`` naming each part with its
rows and sha256 (hashed as the bytes are written, never read back). The manifest is the commit:

* local: parts and manifest are written into a staging directory beside the run's, flushed, and
  the directory renamed into place, so ``run=<key>/`` exists only complete;
* S3 (no rename there): parts are written under ``run=<key>/`` with the attempt's tag in their
  names (two attempts never write the same key), then the manifest is put only if none exists
  (``If-None-Match: *``). Readers go by the manifest: before it exists the run is not there; once
  it exists every part it names is complete. An attempt that loses the race deletes its own
  parts; the winner deletes what failed attempts left behind. A complete run is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
from typing import Any, NoReturn

from mlops_steps.common.storage import attempt_tag, fsync_dir
from mlops_steps.core.errors import StepError
from mlops_steps.scoring.places import Place, check_bucket, file_info, raise_named

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FLAG = "--output"


class HashingSink:
    """A writable file that hashes and counts the bytes going through it to ``stream``."""

    def __init__(self, stream: Any, name: str):
        self.name = name
        self._stream = stream
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def closed(self) -> bool:
        return bool(self._stream.closed)

    def write(self, data: Any) -> int:
        self._digest.update(data)
        self.size += len(data)
        return int(self._stream.write(data) or 0)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class RunOutput:
    """One attempt at writing ``run=<key>/`` under ``root`` (local or S3)."""

    def __init__(self, root: Place, run_key: str):
        self.root = root
        self.run = root.child(f"run={run_key}")
        self.manifest_place = self.run.child(MANIFEST)
        # Local: the staging directory of this pod and pid (a retry clears its own leftover).
        # S3: part names no other attempt can write, not even one of the same process.
        self._staging = root.child(f".run={run_key}.{attempt_tag()}.staging")
        self.tag = f"{attempt_tag()}-{secrets.token_hex(3)}"
        self._written: list[Place] = []
        self._client: Any = None

    def fail(self, exc: BaseException, doing: str, where: Place | None = None) -> NoReturn:
        """Raise ``exc``, named when the operator must fix it (S3: no bucket, access denied)."""
        raise_named(exc, where or self.run, flag=FLAG, doing=doing)

    def manifest(self) -> tuple[dict[str, Any], bytes] | None:
        """The complete run's manifest and its bytes, or None when the run is not complete."""
        import pyarrow.fs as pafs

        where = self.manifest_place
        if file_info(where, flag=FLAG).type != pafs.FileType.File:
            return None
        try:
            with where.filesystem.open_input_stream(where.path) as stream:
                payload = bytes(stream.read())
        except OSError as exc:
            self.fail(exc, "reading the manifest", where)
        try:
            return json.loads(payload), payload
        except json.JSONDecodeError as exc:
            raise StepError(
                f"is not valid JSON ({exc})",
                subject=where.uri,
                fix="delete the run's directory (prefix) to score it again",
            ) from None

    def check_writable(self) -> None:
        """Refuse an output whose S3 bucket does not exist, before the model is loaded."""
        check_bucket(self.root, flag=FLAG)

    def start(self) -> None:
        """Make room for this attempt's files (local: its own staging directory)."""
        if self.root.is_s3:
            return
        staging = self._staging.local
        shutil.rmtree(staging, ignore_errors=True)  # this attempt's own leftover (same pod + pid)
        staging.mkdir(parents=True)

    def _part_place(self, index: int) -> Place:
        if self.root.is_s3:
            return self.run.child(f"part-{index:05d}-{self.tag}.parquet")
        return self._staging.child(f"part-{index:05d}.parquet")

    def open_part(self, index: int) -> HashingSink:
        where = self._part_place(index)
        try:
            stream = where.filesystem.open_output_stream(where.path)
        except OSError as exc:
            self.fail(exc, "writing a part", where)
        self._written.append(where)
        return HashingSink(stream, where.name)

    def close_part(self, sink: HashingSink) -> dict[str, Any]:
        """Close a part (flushed to disk, or its upload completed); its name, bytes and sha256."""
        where = self._written[-1]
        try:
            sink.close()
        except OSError as exc:
            self.fail(exc, "writing a part", where)
        if not where.is_s3:
            fsync_dir(where.local)
        return {"path": sink.name, "bytes": sink.size, "sha256": sink.sha256}

    def commit(self, manifest: dict[str, Any], payload: bytes) -> bool:
        """Publish the run with its manifest (``payload``: its bytes); False when another
        attempt published it first (this attempt's files are removed then)."""
        if self.root.is_s3:
            return self._commit_s3(payload, manifest)
        staging = self._staging.local
        (staging / MANIFEST).write_bytes(payload)
        fsync_dir(staging / MANIFEST)
        fsync_dir(staging)
        final = self.run.local
        try:
            staging.rename(final)
        except OSError:
            if (final / MANIFEST).is_file():
                shutil.rmtree(staging, ignore_errors=True)
                return False
            raise
        fsync_dir(final.parent)
        return True

    def _s3_client(self) -> Any:
        """boto3 where pyarrow cannot: a conditional put, and deletes that leave no directory
        marker behind (pyarrow's ``delete_file`` re-creates its parent "directory")."""
        import boto3

        if self._client is None:
            self._client = boto3.client("s3")
        return self._client

    def _commit_s3(self, payload: bytes, manifest: dict[str, Any]) -> bool:
        bucket, key = self.manifest_place.bucket_and_key
        try:
            self._s3_client().put_object(
                Bucket=bucket, Key=key, Body=payload, IfNoneMatch="*",
                ContentType="application/json",
            )  # fmt: skip
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code == "PreconditionFailed":  # another attempt committed first
                self.discard()
                return False
            self.fail(exc, "writing the manifest", self.manifest_place)
        self._sweep(manifest)
        return True

    def _sweep(self, manifest: dict[str, Any]) -> None:
        """Delete what failed attempts left under the run (not named by the manifest)."""
        bucket, prefix = self.run.bucket_and_key
        keep = {f"{prefix}/{name}" for name in (MANIFEST, *(f["path"] for f in manifest["files"]))}
        try:
            pages = (
                self._s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=f"{prefix}/")
            )
            stale = [o["Key"] for page in pages for o in page.get("Contents", [])]
            self._delete(bucket, [key for key in stale if key not in keep])
        except Exception as exc:  # the run is complete; leftovers are only untidy
            log.warning("could not remove leftovers under %s: %s", self.run.uri, exc)

    def _delete(self, bucket: str, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # the most one request deletes
            batch = keys[start : start + 1000]
            log.info("removing %s object(s) no complete run names, e.g. s3://%s/%s",
                     len(batch), bucket, batch[0])  # fmt: skip
            self._s3_client().delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )

    def discard(self) -> None:
        """Remove what this attempt wrote (best effort: it is failing already)."""
        if not self.root.is_s3:
            shutil.rmtree(self._staging.local, ignore_errors=True)
            return
        written, self._written = self._written, []
        if not written:
            return
        try:
            self._delete(written[0].bucket_and_key[0], [w.bucket_and_key[1] for w in written])
        except Exception as exc:
            log.warning("could not remove this attempt's parts under %s: %s", self.run.uri, exc)
