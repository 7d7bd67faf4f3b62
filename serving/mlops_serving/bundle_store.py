"""Bundles in an object store (``SERVING_MODEL_STORE=s3://bucket/prefix``): fetched into a local
directory before :func:`mlops_serving.model.load_bundle` checks and loads them.

The manifest is read first and only the files it lists are fetched: the image-build step puts a
bundle's files before its manifest, so a bundle whose manifest is there is complete, and one
without is not a bundle yet. Every file is still checked against the manifest's sha256 by
``load_bundle``, as for a local store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class BundleFetchError(Exception):
    """The bundle could not be read from the store (missing, refused, unreachable)."""


def is_object_store(location: str) -> bool:
    return location.startswith("s3://")


def fetch_bundle(store_uri: str, tag: str, into: Path, *, client: Any = None) -> Path:
    """``<store_uri>/<tag>/`` as a local directory under ``into``; its path."""
    if not _TAG.fullmatch(tag):
        raise BundleFetchError(f"{tag!r} is not a bundle name")
    if client is None:
        import boto3

        client = boto3.client("s3")
    bucket, _, prefix = store_uri.removeprefix("s3://").partition("/")
    base = f"{prefix.strip('/')}/{tag}" if prefix.strip("/") else tag
    target = into / tag
    try:
        body = client.get_object(Bucket=bucket, Key=f"{base}/manifest.json")["Body"].read()
        manifest = json.loads(body)
        files = manifest["files"] if isinstance(manifest, dict) else None
        if not isinstance(files, dict):
            raise BundleFetchError(f"s3://{bucket}/{base}/manifest.json lists no files")
        target.mkdir(parents=True, exist_ok=True)
        (target / "manifest.json").write_bytes(body)
        for relative in files:
            local = (target / relative).resolve()
            if not local.is_relative_to(target.resolve()):
                raise BundleFetchError(f"manifest entry {relative!r} leaves the bundle")
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, f"{base}/{relative}", str(local))
    except BundleFetchError:
        raise
    except Exception as exc:  # botocore's errors: missing object, refused, unreachable
        raise BundleFetchError(f"cannot fetch bundle s3://{bucket}/{base}: {exc}") from None
    return target
