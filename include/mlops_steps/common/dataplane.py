"""The data plane on an object store: ``MLOPS_DATA_ROOT=s3://bucket/prefix``.

An object store has no rename, no append and no lock, which is what the directory data root
relies on (storage.py: write a temporary file, rename it into place; ledger.py: append under
``flock``). So a step never writes into the store piece by piece. It works in a copy of its own
(``Settings.data_root``: a fresh directory per step process), and:

* **reads** what it asks for, on first use: a partition only once its ``manifest.json`` is in the
  store (the manifest is the partition's commit marker: data without one is invisible), a
  release's per-version results, a cached file;
* **publishes** when it ends — done, or refused with a named error (a failed validation's results
  and Data Docs are what its operator reads) — every file it created or changed, a directory's
  ``manifest.json`` after all its other files. A crashed attempt publishes nothing, and one
  interrupted mid-publish leaves only objects no new manifest names: a retry writes them again;
* keeps the **ledger** as one object per entry, written with a conditional put
  (``If-None-Match: *``): concurrent writers neither duplicate nor lose an entry
  (release/ledger.py).

An unreachable store is :class:`ObjectStoreUnavailable` (exit 1: Airflow retries the step).

A working copy, not an fsspec file system: every step's code stays on local paths (LightGBM,
Great Expectations' Data Docs and pyarrow's memory-mapped reads all want one), and what a step
reads from the store is exactly what it names.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_steps.core.errors import ServiceUnavailable, StepError
from mlops_steps.core.settings import Settings

log = logging.getLogger(__name__)

#: The file that commits a directory: published after every other file of it, and the one a
#: reader requires before it fetches the rest.
COMMIT_MARKER = "manifest.json"
_SKIPPED_SUFFIXES = (".tmp", ".lock")


class ObjectStoreUnavailable(ServiceUnavailable):
    """The object store did not answer (or answered with a server error): retry the step."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_missing(exc: BaseException) -> bool:
    return _error_code(exc) in {"404", "NoSuchKey", "NotFound"}


@dataclass
class ObjectStorePlane:
    """One step process's view of the store: its working copy and what it fetched."""

    uri: str  # s3://bucket/prefix (MLOPS_DATA_ROOT)
    root: Path  # the working copy (Settings.data_root)
    client: Any = None
    # What was fetched, by path relative to ``root``: (size, mtime_ns) as written, so publish
    # puts only what the step changed.
    fetched: dict[str, tuple[int, int]] = field(default_factory=dict)
    _fetched_dirs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.bucket, self.prefix = split_uri(self.uri)

    @property
    def store(self) -> Any:
        """The S3 client, made on first use (a verb that reads and writes nothing never
        connects)."""
        if self.client is None:
            import boto3  # only where the data root is an object store
            from botocore.config import Config

            # Standard mode retries throttling and transient errors with back-off; a store that
            # stays down fails within seconds, and Airflow's retry takes over.
            config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=5)
            self.client = boto3.client("s3", config=config)
        return self.client

    # -- names -------------------------------------------------------------------------------

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, local: Path) -> str:
        try:
            return local.absolute().relative_to(self.root.absolute()).as_posix()
        except ValueError:
            raise ValueError(f"{local} is not under the working copy {self.root}") from None

    def _call(self, doing: str, subject: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """One store request; an unreachable store or a server error becomes a named error."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return call(*args, **kwargs)
        except NoCredentialsError:
            raise StepError(
                f"no S3 credentials while {doing}",
                subject=subject,
                fix="give the step AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (worker env, the "
                "aws_default connection or the mlops-s3 Secret) or an instance role",
            ) from None
        except ClientError as exc:
            if _is_missing(exc) or _error_code(exc) == "PreconditionFailed":
                raise
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status in (403, 401) or _error_code(exc) in {"AccessDenied", "NoSuchBucket"}:
                raise StepError(
                    f"refused while {doing} ({_error_code(exc)})",
                    subject=subject,
                    fix="check the bucket in MLOPS_DATA_ROOT and the step's S3 credentials",
                ) from None
            raise self._unavailable(doing, subject, exc) from None
        except BotoCoreError as exc:
            raise self._unavailable(doing, subject, exc) from None

    def _unavailable(self, doing: str, subject: str, exc: BaseException) -> ObjectStoreUnavailable:
        return ObjectStoreUnavailable(
            f"the object store did not answer while {doing} ({type(exc).__name__}: {exc})",
            subject=subject,
            fix="check that the store at AWS_ENDPOINT_URL is up; the task's retry continues",
        )

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        paginator = self.store.get_paginator("list_objects_v2")
        pages = self._call(
            "listing",
            f"s3://{self.bucket}/{prefix}",
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)),
        )
        return [item for page in pages for item in page.get("Contents", [])]

    def public(self, text: str) -> str:
        """``text`` with working-copy paths as the store's URIs (what a result or an error
        names must mean something outside this process)."""
        return text.replace(str(self.root.absolute()), self.uri).replace(str(self.root), self.uri)

    # -- reading -----------------------------------------------------------------------------

    def _download(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.fetch.tmp")
        self._call(
            "reading",
            f"s3://{self.bucket}/{key}",
            self.store.download_file,
            self.bucket,
            key,
            str(partial),
        )
        partial.replace(local)
        stat = local.stat()
        self.fetched[self.relative(local)] = (stat.st_size, stat.st_mtime_ns)

    def fetch_dir(
        self, local: Path, *, committed: bool = False, skip: tuple[str, ...] = ()
    ) -> bool:
        """Copy the store's objects under ``local``'s place into it, once per process, but those
        under a ``skip`` subdirectory. With ``committed``, only when its ``manifest.json`` is
        there (then the manifest first: what it names is complete). Returns whether anything
        was there."""
        relative = self.relative(local)
        if relative in self._fetched_dirs:
            return True
        prefix = self.key(relative) + "/"
        objects = [o for o in self._list(prefix) if not o["Key"].endswith("/")]
        names = {
            o["Key"][len(prefix) :]: o["Key"]
            for o in objects
            if not o["Key"][len(prefix) :].startswith(skip)
        }
        if committed and COMMIT_MARKER not in names:
            if names:
                log.warning(
                    "s3://%s/%s: %d object(s) but no %s: not committed, not read",
                    self.bucket,
                    prefix,
                    len(names),
                    COMMIT_MARKER,
                )
            return False
        ordered = sorted(names, key=lambda name: (name != COMMIT_MARKER, name))
        for name in ordered:
            self._download(names[name], local / name)
        self._fetched_dirs.add(relative)
        return bool(names)

    def fetch_file(self, local: Path) -> bool:
        """Copy one object into the working copy, once; False when the store has none."""
        relative = self.relative(local)
        if relative in self.fetched:
            return True
        from botocore.exceptions import ClientError

        try:
            self._download(self.key(relative), local)
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    # -- writing -----------------------------------------------------------------------------

    def changed_files(self) -> list[Path]:
        """What the step wrote: new or changed files, each directory's manifest last."""
        changed = []
        for path in self.root.rglob("*"):
            if not path.is_file() or path.name.endswith(_SKIPPED_SUFFIXES):
                continue
            stat = path.stat()
            if self.fetched.get(self.relative(path)) != (stat.st_size, stat.st_mtime_ns):
                changed.append(path)
        return sorted(changed, key=lambda p: (p.name == COMMIT_MARKER, p.as_posix()))

    def publish(self) -> int:
        """Put every file the step wrote; returns how many."""
        files = self.changed_files()
        for path in files:
            relative = self.relative(path)
            if path.suffix == ".json":  # results name reports by where they will be: the store
                text = path.read_text(encoding="utf-8")
                if (public := self.public(text)) != text:
                    self._put_json(relative, public.encode(), "publishing")
                    stat = path.stat()
                    self.fetched[relative] = (stat.st_size, stat.st_mtime_ns)
                    continue
            self._call(
                "publishing",
                f"s3://{self.bucket}/{self.key(relative)}",
                self.store.upload_file,
                str(path),
                self.bucket,
                self.key(relative),
            )
            stat = path.stat()
            self.fetched[relative] = (stat.st_size, stat.st_mtime_ns)
        if files:
            log.info("published %d file(s) to %s", len(files), self.uri)
        return len(files)

    def _put_json(self, relative: str, body: bytes, doing: str, **conditions: str) -> None:
        key = self.key(relative)
        self._call(doing, f"s3://{self.bucket}/{key}", self.store.put_object, Bucket=self.bucket,
                   Key=key, Body=body, ContentType="application/json", **conditions)  # fmt: skip

    def put_once(self, relative: str, payload: bytes) -> bool:
        """Write an object only if none is there (a conditional put); whether this call wrote it."""
        from botocore.exceptions import ClientError

        try:
            self._put_json(relative, payload, "writing", IfNoneMatch="*")
        except ClientError as exc:
            if _error_code(exc) == "PreconditionFailed":
                return False
            raise
        return True

    def read_json_objects(self, relative_prefix: str) -> list[dict[str, Any]]:
        """Every JSON object under a prefix (the ledger's entries), in key order."""
        from botocore.exceptions import ClientError

        entries = []
        for item in sorted(self._list(self.key(relative_prefix) + "/"), key=lambda o: o["Key"]):
            try:
                body = self._call(
                    "reading",
                    f"s3://{self.bucket}/{item['Key']}",
                    self.store.get_object,
                    Bucket=self.bucket,
                    Key=item["Key"],
                )
            except ClientError as exc:
                if _is_missing(exc):  # removed between the listing and the read
                    continue
                raise
            entries.append(json.loads(body["Body"].read()))
        return entries


_ACTIVE: contextvars.ContextVar[ObjectStorePlane | None] = contextvars.ContextVar(
    "mlops_data_plane", default=None
)


def active() -> ObjectStorePlane | None:
    """The object store this step process works against, if its data root is one."""
    return _ACTIVE.get()


@contextlib.contextmanager
def working_copy(settings: Settings, *, client: Any = None) -> Iterator[ObjectStorePlane | None]:
    """While a step runs: its working copy of the store (nothing when the data root is a
    directory). The caller publishes (:meth:`ObjectStorePlane.publish`) what should outlive the
    step; the copy is removed on the way out."""
    if not settings.data_plane:
        yield None
        return
    shutil.rmtree(settings.data_root, ignore_errors=True)  # a reused pid's leftovers
    settings.data_root.mkdir(parents=True)
    plane = ObjectStorePlane(settings.data_plane, settings.data_root, client)
    token = _ACTIVE.set(plane)
    try:
        yield plane
    finally:
        _ACTIVE.reset(token)
        shutil.rmtree(settings.data_root, ignore_errors=True)


def fetch_committed(directory: Path, *, skip: tuple[str, ...] = ()) -> None:
    """A partition directory as the store has it committed, but what is under ``skip`` (no-op
    on a directory data root)."""
    if (plane := _ACTIVE.get()) is not None:
        plane.fetch_dir(directory, committed=True, skip=skip)


def fetch_dir(directory: Path) -> None:
    """A directory's objects (no commit marker: per-version release results)."""
    if (plane := _ACTIVE.get()) is not None:
        plane.fetch_dir(directory)


def fetch_file(path: Path) -> None:
    """One file, if the store has it (a cache a step may reuse)."""
    if (plane := _ACTIVE.get()) is not None:
        plane.fetch_file(path)
