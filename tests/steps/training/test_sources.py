"""Reading sources: local files, file://, HTTPS-style URLs from a real loopback server, and S3 from
a real S3-compatible server (moto) on loopback; every failure names the URI and the fix."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.errors import SourceError
from mlops_steps.core.policies import SourceRequest
from mlops_steps.training.sources import read_source


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return generate_churn(200, seed=11)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The generator's frame as a CSV reads back: its category and Arrow text columns as
    plain strings."""
    return plain_values(frame)


def _write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def _request(uri: str) -> SourceRequest:
    return SourceRequest(uri=uri, rows=1, seed=0)


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz", "data.parquet"])
def test_local_files_round_trip(tmp_path: Path, sample: pd.DataFrame, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        sample.to_parquet(path, index=False)
    else:
        sample.to_csv(path, index=False)
    expected = sample if name.endswith(".parquet") else _as_text(sample)
    for uri in (str(path), f"file://{path}"):
        pd.testing.assert_frame_equal(read_source(_request(uri)), expected, check_dtype=False)


def test_synthetic_source_is_the_generator() -> None:
    frame = read_source(SourceRequest("synthetic://churn", rows=300, seed=4, drift=0.2))
    pd.testing.assert_frame_equal(frame, generate_churn(300, 4, 0.2))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.csv", "no such file"),
        (lambda p: _write(p / "empty.csv", b""), "is empty"),
        (lambda p: _write(p / "bad.parquet", b"not parquet"), "cannot be parsed as parquet"),
        (lambda p: p / "data.json", "unknown file format"),
    ],
)
def test_unreadable_local_files_name_the_file(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceError, match=message) as info:
        read_source(_request(str(path)))
    assert path.name in str(info.value)


def test_drift_is_refused_for_real_files(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = tmp_path / "d.csv"
    sample.to_csv(path, index=False)
    with pytest.raises(SourceError, match="--drift"):
        read_source(SourceRequest(str(path), rows=1, seed=0, drift=0.3))


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported scheme 'ftp'"):
        read_source(_request("ftp://example.invalid/data.csv"))


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_http_source(http_root: tuple[Path, str], sample: pd.DataFrame) -> None:
    root, base = http_root
    sample.to_parquet(root / "churn.parquet", index=False)
    pd.testing.assert_frame_equal(read_source(_request(f"{base}/churn.parquet")), sample)
    with pytest.raises(SourceError, match="HTTP 404"):
        read_source(_request(f"{base}/nope.csv"))


def test_unreachable_http_source_names_the_url() -> None:
    from mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}/data.csv"
    with pytest.raises(SourceError, match="unreachable") as info:
        read_source(_request(uri))
    assert uri in str(info.value)


def test_s3_source(s3_endpoint: str, sample: pd.DataFrame, tmp_path: Path) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="raw")
    path = tmp_path / "x.csv"
    sample.to_csv(path, index=False)
    s3.upload_file(str(path), "raw", "churn/2026/x.csv")
    frame = read_source(_request("s3://raw/churn/2026/x.csv"))
    pd.testing.assert_frame_equal(frame, _as_text(sample), check_dtype=False)
    with pytest.raises(SourceError, match="cannot be read from S3") as info:
        read_source(_request("s3://raw/churn/missing.csv"))
    assert "s3://raw/churn/missing.csv" in str(info.value)
