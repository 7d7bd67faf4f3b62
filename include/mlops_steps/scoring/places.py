"""Where a batch run reads and writes: a local path (or ``file://`` URI) or ``s3://bucket/key``,
as one pyarrow filesystem and a path in it, so the reader and the writer have one code path.

S3 goes through :class:`pyarrow.fs.S3FileSystem` (streamed reads, multipart writes): the
endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, the region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, the keys from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` (a pod's S3 Secret, or the local runner's AWS connection) or else the
SDK's own chain (instance role, web identity). Credentials are never logged. Failures the
operator must fix (no credentials, no such bucket or key, access denied) are named errors with
the URI and the fix; anything else (a network blip, throttling) stays an ``OSError``, which the
runners treat as a crash worth a retry.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

from mlops_steps.core.errors import SourceError, StepError

log = logging.getLogger(__name__)
S3_FIX = (
    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (the S3 Secret in pods, the AWS connection "
    "for local runs) and AWS_ENDPOINT_URL for an S3-compatible store"
)
#: AWS error names (pyarrow's "AWS Error <NAME> during ..." and botocore's error codes).
_DENIED = {
    "ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN",
    "INVALID_CLIENT_TOKEN_ID", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "403",
}  # fmt: skip
_NO_BUCKET = {"NO_SUCH_BUCKET", "NoSuchBucket"}
_NO_KEY = {"NO_SUCH_KEY", "NoSuchKey", "RESOURCE_NOT_FOUND", "404"}
_PYARROW_CODE = re.compile(r"AWS Error ([A-Z_]+) during")


class S3Failure(SourceError):
    """An S3 location cannot be used as asked (the operator must change something)."""


class NoS3Credentials(S3Failure):
    """No AWS credentials anywhere the SDK looks."""


class NoSuchBucket(S3Failure):
    """The URI's bucket does not exist (at this endpoint)."""


class NoSuchObject(S3Failure):
    """No object (or no object under the prefix) at the URI."""


class S3AccessDenied(S3Failure):
    """The credentials are refused for this bucket or key (a policy, or wrong keys)."""


@dataclass(frozen=True)
class Place:
    """A file or directory (an S3 prefix) in a filesystem, and the URI that names it."""

    uri: str  # a local path or s3://bucket/key: what messages and the manifest say
    path: str  # in ``filesystem``: /abs/path or bucket/key
    filesystem: Any  # a pyarrow.fs.FileSystem

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def child(self, name: str) -> Place:
        return Place(f"{self.uri.rstrip('/')}/{name}", f"{self.path.rstrip('/')}/{name}",
                     self.filesystem)  # fmt: skip

    @property
    def local(self) -> Path:
        """The local path (only for a local place)."""
        assert not self.is_s3, self.uri
        return Path(self.path)

    @property
    def bucket_and_key(self) -> tuple[str, str]:
        bucket, _, key = self.path.partition("/")
        return bucket, key


def place(uri: str, *, flag: str) -> Place:
    """The place ``uri`` names: a path, a ``file://`` URI or ``s3://bucket[/key]``; any other
    scheme is refused by name."""
    import pyarrow.fs as pafs

    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        bucket, key = parsed.netloc, parsed.path.strip("/")
        if not bucket:
            raise S3Failure("names no bucket", subject=uri, fix=f"give {flag} as s3://bucket/key")
        path = f"{bucket}/{key}" if key else bucket
        return Place(f"s3://{path}", path, s3_filesystem(f"s3://{path}"))
    if parsed.scheme == "file":
        local = Path(parsed.path).expanduser()
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise SourceError(
            f"the {parsed.scheme}:// scheme is not supported for batch scoring",
            subject=uri,
            fix=f"give {flag} a local path, a file:// URI or an s3:// URI",
        )
    else:
        local = Path(uri).expanduser()
    return Place(str(local), str(local.absolute()), pafs.LocalFileSystem())


def _first_env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def s3_filesystem(uri: str) -> Any:
    """An S3 filesystem for the current environment (one per process and configuration);
    refused by name (``uri`` in the message) when there are no credentials at all."""
    endpoint = _first_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = _first_env("AWS_REGION", "AWS_DEFAULT_REGION")
    keys = (
        _first_env("AWS_ACCESS_KEY_ID"),
        _first_env("AWS_SECRET_ACCESS_KEY"),
        _first_env("AWS_SESSION_TOKEN"),
    )
    if not (keys[0] and keys[1]) and not _sdk_has_credentials():
        raise NoS3Credentials("no AWS credentials found", subject=uri, fix=S3_FIX)
    return _s3_filesystem(endpoint, region, keys)


@functools.lru_cache(maxsize=2)
def _s3_filesystem(
    endpoint: str | None, region: str | None, keys: tuple[str | None, str | None, str | None]
) -> Any:
    import pyarrow.fs as pafs

    access_key, secret_key, token = keys if keys[0] and keys[1] else (None, None, None)
    options = {
        "endpoint_override": endpoint,
        "region": region,
        "access_key": access_key,
        "secret_key": secret_key,
        "session_token": token,
    }
    log.info("S3 at %s (region %s, credentials from %s)", endpoint or "AWS", region or "default",
             "the environment" if access_key else "the SDK chain")  # fmt: skip
    return pafs.S3FileSystem(**{k: v for k, v in options.items() if v is not None})


def _sdk_has_credentials() -> bool:
    """Whether the SDK's own chain (files, web identity, instance role) holds credentials."""
    import botocore.session

    return botocore.session.get_session().get_credentials() is not None


def _aws_code(exc: Exception) -> str:
    """The AWS error name in a pyarrow ``OSError`` or a botocore error ("" if none)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    if type(exc).__name__ == "NoCredentialsError":
        return "NoCredentials"
    found = _PYARROW_CODE.search(str(exc))
    return found.group(1) if found else ""


def s3_failure(exc: Exception, place: Place, *, flag: str, doing: str) -> Exception:
    """A named error for what the operator must fix, else ``exc`` itself (to crash and retry).

    ``exc`` is an ``OSError`` from pyarrow (its text carries the AWS error name) or a botocore
    error; the credentials never appear in either."""
    code = _aws_code(exc)
    bucket = place.bucket_and_key[0]
    if code == "NoCredentials":
        return NoS3Credentials(f"no AWS credentials found while {doing}", subject=place.uri,
                               fix=S3_FIX)  # fmt: skip
    if code in _NO_BUCKET:
        return _no_bucket(place, flag=flag, doing=doing)
    if code in _DENIED:
        return S3AccessDenied(
            f"access denied ({code}) while {doing}",
            subject=place.uri,
            fix=f"grant the step's credentials access to s3://{bucket} (read for --input; "
            "list, write and delete for --output) or use keys that have it",
        )
    if isinstance(exc, FileNotFoundError) or code in _NO_KEY:
        return NoSuchObject(f"no such key or prefix (while {doing})", subject=place.uri,
                            fix=f"check {flag}")  # fmt: skip
    return exc


def file_info(place: Place, *, flag: str) -> Any:
    """The place's ``FileInfo`` (type NotFound when absent), S3 failures named."""
    try:
        return place.filesystem.get_file_info(place.path)
    except OSError as exc:
        raise_named(exc, place, flag=flag, doing="looking it up")


def check_exists(place: Place, *, flag: str, what: str) -> Any:
    """The place's ``FileInfo``; absent, the error says whether the bucket or the key is."""
    import pyarrow.fs as pafs

    info = file_info(place, flag=flag)
    if info.type != pafs.FileType.NotFound:
        return info
    if place.is_s3:
        check_bucket(place, flag=flag)
        raise NoSuchObject(f"no such {what}", subject=place.uri, fix=f"check {flag}")
    raise SourceError(f"no such {what}", subject=place.uri, fix=f"check {flag}")


def check_bucket(place: Place, *, flag: str) -> None:
    """Refuse an S3 place whose bucket does not exist (a no-op for local places)."""
    import pyarrow.fs as pafs

    if not place.is_s3:
        return
    try:
        found = place.filesystem.get_file_info(place.bucket_and_key[0])
    except OSError as exc:
        raise_named(exc, place, flag=flag, doing="looking up its bucket")
    if found.type == pafs.FileType.NotFound:
        raise _no_bucket(place, flag=flag, doing="looking up its bucket")


def _no_bucket(place: Place, *, flag: str, doing: str) -> NoSuchBucket:
    return NoSuchBucket(
        f"bucket {place.bucket_and_key[0]!r} does not exist (while {doing})",
        subject=place.uri,
        fix=f"create the bucket or correct {flag}; check that AWS_ENDPOINT_URL names the store",
    )


def as_step_error(exc: BaseException, place: Place, *, flag: str, doing: str) -> BaseException:
    """``exc`` as a named S3 error when it is one the operator must fix, else unchanged."""
    if isinstance(exc, StepError) or not place.is_s3 or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, OSError) or type(exc).__module__.startswith("botocore"):
        return s3_failure(exc, place, flag=flag, doing=doing)
    return exc


def raise_named(exc: BaseException, place: Place, *, flag: str, doing: str) -> NoReturn:
    """Raise ``exc`` as its named S3 error, or as itself (with its traceback) when it is not
    one the operator must fix."""
    named = as_step_error(exc, place, flag=flag, doing=doing)
    if named is exc:
        raise exc
    raise named from None
