"""The request body limit, on a real service process: a body over it gets 413 before it is read
into memory, whether it declares its length or arrives chunked, and the process does not grow
by the size of a body it refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.service_process import Service

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn

FEATURE_NAMES = load_contract("churn").feature_names

pytestmark = pytest.mark.serving

MAX_BATCH_ROWS = 200
LIMIT = MAX_BATCH_ROWS * 1024 + 4 * 1024 * 1024  # derived from SERVING_MAX_BATCH_ROWS
MIB = 1 << 20


@pytest.fixture(scope="module")
def service(registry: str, start_service: Callable[..., Service]) -> Service:
    return start_service(registry, SERVING_MAX_BATCH_ROWS=str(MAX_BATCH_ROWS))


def _batch(rows: int) -> bytes:
    frame = plain_values(generate_churn(rows, seed=2).loc[:, list(FEATURE_NAMES)])
    return json.dumps({"instances": json.loads(frame.to_json(orient="records"))}).encode()


def _padded(size: int) -> bytes:
    """A valid batch request of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    body = _batch(MAX_BATCH_ROWS)
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _chunks(total: int, chunk: int = MIB) -> Iterator[bytes]:
    """``total`` bytes of a batch request in chunks (httpx sends them chunked)."""
    head = _batch(2)[:-2]  # an unterminated instances list, padded with whitespace
    yield head
    sent = len(head)
    while sent < total:
        part = b" " * min(chunk, total - sent)
        sent += len(part)
        yield part


def _rss(service: Service) -> int:
    for line in open(f"/proc/{service.process.pid}/status"):  # noqa: PTH123, SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _assert_limit_response(response: Any) -> None:
    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body exceeds the limit of {LIMIT} bytes (SERVING_MAX_BODY_BYTES); "
        "split the request"
    }


def test_a_declared_length_over_the_limit_gets_413_and_one_at_the_limit_is_served(
    service: Service,
) -> None:
    with service.client() as http:
        at_limit = http.post(
            "/predict/batch", content=_padded(LIMIT), headers={"content-type": "application/json"}
        )
        assert at_limit.status_code == 200 and at_limit.json()["rows"] == MAX_BATCH_ROWS
        over = http.post(
            "/predict/batch",
            content=_padded(LIMIT + 1),
            headers={"content-type": "application/json"},
        )
        _assert_limit_response(over)
        assert http.get("/ready").status_code == 200  # the connection and service are fine


def test_a_chunked_body_over_the_limit_gets_413(service: Service) -> None:
    with service.client() as http:
        response = http.post("/predict/batch", content=_chunks(LIMIT + 1))
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        _assert_limit_response(response)
        within = http.post("/predict/batch", content=iter([_batch(3)]))
        assert within.status_code == 200 and within.json()["rows"] == 3


def test_a_large_chunked_upload_is_refused_without_growing_the_process(service: Service) -> None:
    body_size = 200 * MIB
    before = _rss(service)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _rss(service))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with service.client() as http:
            response = http.post("/predict", content=_chunks(body_size))
    finally:
        done.set()
        sampler.join()
    after = _rss(service)
    # At most the limit (4.4 MB) is ever held; the 200 MB body would show as ~200 MB or more.
    assert peak - before < 32 * MIB, (before, peak)
    assert after - before < 32 * MIB, (before, after)
    _assert_limit_response(response)
