"""Reading raw data from where it lives: the synthetic generator, a local file, S3 or HTTPS."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import SourceError
from mlops_steps.core.policies import SYNTHETIC_SOURCE, SourceRequest

_HTTP_TIMEOUT_S = 60.0
_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _format_of(uri: str) -> str:
    path = urlparse(uri).path or uri
    lower = path.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix):
            return "parquet" if suffix in {".parquet", ".pq"} else "csv"
    raise SourceError(
        "unknown file format",
        subject=uri,
        fix=f"point --source at a file ending in one of {', '.join(_SUFFIXES)}",
    )


def _parse(payload: bytes, fmt: str, uri: str) -> pd.DataFrame:
    if not payload:
        raise SourceError("is empty (0 bytes)", subject=uri, fix="check the export that wrote it")
    try:
        if fmt == "parquet":
            with pd.option_context("mode.string_storage", "pyarrow"):  # text stays in Arrow
                return pd.read_parquet(io.BytesIO(payload))
        compression = "gzip" if uri.lower().endswith(".gz") else None
        return pd.read_csv(io.BytesIO(payload), compression=compression)
    except Exception as exc:
        raise SourceError(
            f"cannot be parsed as {fmt}: {exc}",
            subject=uri,
            fix=f"make sure the file is valid {fmt}",
        ) from None


def _read_local(uri: str) -> bytes:
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri).expanduser()
    if not path.is_file():
        raise SourceError(
            "no such file", subject=str(path), fix="check the path (it is read by the step)"
        )
    return path.read_bytes()


def _read_s3(uri: str) -> bytes:
    import boto3  # heavy; only for s3 sources
    import botocore.exceptions

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise SourceError("is not of the form s3://bucket/key", subject=uri)
    try:
        response = boto3.client("s3").get_object(Bucket=bucket, Key=key)
        payload: bytes = response["Body"].read()
    except botocore.exceptions.NoCredentialsError:
        raise SourceError(
            "no AWS credentials found",
            subject=uri,
            fix="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (a Kubernetes Secret in pods)",
        ) from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SourceError(f"cannot be read from S3: {exc}", subject=uri) from None
    return payload


def _read_http(uri: str) -> bytes:
    import requests

    try:
        response = requests.get(uri, timeout=_HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise SourceError(
            f"is unreachable: {type(exc).__name__}", subject=uri, fix="check the URL and network"
        ) from None
    if response.status_code != 200:
        raise SourceError(f"answered HTTP {response.status_code}", subject=uri)
    return response.content


class SyntheticSourceMismatch(SourceError):
    """The synthetic churn generator was asked for a model whose contract is not churn's."""


def resolve_source(request: SourceRequest, contract: ModelContract) -> SourceRequest:
    """The request for ``contract``'s model: the synthetic churn generator only fits a contract
    with the churn table's columns; for any other model the default URI stands for the
    contract's ``source`` (and with none, or a synthetic one, the run is refused, named)."""
    from mlops_steps.contract.synthetic import fits

    if not request.is_synthetic or fits(contract):
        return request
    if contract.source and contract.source not in {"synthetic", SYNTHETIC_SOURCE}:
        return dataclasses.replace(request, uri=contract.source)
    where = contract.path or f"the contract of {contract.name}"
    raise SyntheticSourceMismatch(
        f"generates the churn table, not model {contract.name!r}'s columns, and the model's "
        "contract names no other source",
        subject=f"source {request.uri}",
        fix=f"give --source (Param source_uri) a CSV/Parquet URI, or set `source:` in {where}",
    )


def read_source_chunks(request: SourceRequest) -> Iterator[pd.DataFrame]:
    """The synthetic source's table a chunk at a time (each a SourceError when it fails)."""
    from mlops_steps.contract.synthetic import generate_churn_chunks

    try:
        yield from generate_churn_chunks(request.rows, request.seed, request.drift)
    except ValueError as exc:
        raise SourceError(str(exc), subject="synthetic source") from None


def read_source(request: SourceRequest) -> pd.DataFrame:
    """Return the raw frame for ``request``; every failure is a SourceError naming the URI."""
    if request.is_synthetic:
        from mlops_steps.contract.synthetic import generate_churn

        try:
            return generate_churn(request.rows, request.seed, request.drift)
        except ValueError as exc:
            raise SourceError(str(exc), subject="synthetic source") from None
    if request.drift:
        raise SourceError(
            "drift injection only applies to the synthetic source",
            subject="--drift",
            fix="set drift to 0 when reading a file",
        )
    scheme = urlparse(request.uri).scheme
    fmt = _format_of(request.uri)
    if scheme in {"", "file"}:
        payload = _read_local(request.uri)
    elif scheme == "s3":
        payload = _read_s3(request.uri)
    elif scheme in {"http", "https"}:
        payload = _read_http(request.uri)
    else:
        raise SourceError(
            f"unsupported scheme {scheme!r}",
            subject=request.uri,
            fix="use a local path, file://, s3://, https:// or synthetic://churn",
        )
    return _parse(payload, fmt, request.uri)
