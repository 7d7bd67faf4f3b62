"""The bridge's pure parts: MLflow's signature scheme byte for byte, freshness, payload mapping,
and which way the mount and the app import each other."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from mlflow.entities.webhook import WebhookEvent
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlflow.webhooks.types import get_example_payload_for_event

from mlops_provider.webhooks.events import (
    HANDLED_EVENTS,
    TEST_PAYLOADS,
    Ignored,
    PayloadError,
    RegistryEvent,
    parse,
)
from mlops_provider.webhooks.signature import SignatureError, sign, verify

SECRET = "s3cr3t-for-tests-0123456789"
DELIVERY = "2f1c7a52-6a4e-4e59-9a77-0c7d1e7e0b11"


def _headers(
    body: bytes, *, secret: str = SECRET, ts: int | None = None, delivery: str = DELIVERY
) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": stamp,
        "X-MLflow-Signature": sign(secret, delivery, stamp, body),
    }


def _body(entity: str = "model_version_alias", action: str = "created", **data: str) -> bytes:
    payload = {
        "entity": entity,
        "action": action,
        "timestamp": "2026-11-23T08:00:00.000000+00:00",
        "data": data or {"name": "churn", "alias": "challenger", "version": "3"},
    }
    return json.dumps(payload).encode()


def test_signature_matches_mlflow_byte_for_byte() -> None:
    # MLflow signs the str it sends as UTF-8; we sign the received bytes: equal for any text.
    data = {"description": "mod\u00e8le \u2014 v2 ", "tags": {"k": "v"}}
    payload = json.dumps({"entity": "model_version", "data": data}, ensure_ascii=False, indent=1)
    ours = sign(SECRET, DELIVERY, "1795420000", payload.encode("utf-8"))
    assert ours == _generate_hmac_signature(SECRET, DELIVERY, "1795420000", payload)


def test_verify_accepts_a_fresh_valid_delivery() -> None:
    body = _body()
    delivery = verify(_headers(body), body, secret=SECRET, now=time.time())
    assert delivery.delivery_id == DELIVERY
    lower = {k.lower(): v for k, v in _headers(body).items()}  # header names are case-insensitive
    assert verify(lower, body, secret=SECRET, now=time.time()).delivery_id == DELIVERY
    rotated = _headers(body)  # several signatures (secret rotation): one valid is enough
    rotated["X-MLflow-Signature"] = f"v1,AAAA {rotated['X-MLflow-Signature']}"
    verify(rotated, body, secret=SECRET, now=time.time())


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: (_headers(b, secret="other-secret-0123456789"), b), "does not match"),
        (lambda h, b: (h, b.replace(b'"3"', b'"4"')), "does not match"),
        (lambda h, b: ({**h, "X-MLflow-Delivery-Id": "another-id"}, b), "does not match"),
        (
            lambda h, b: ({**h, "X-MLflow-Signature": "v2," + h["X-MLflow-Signature"][3:]}, b),
            "does not match",
        ),
        (
            lambda h, b: ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, b),
            "missing header",
        ),
        (lambda h, b: (_headers(b, ts=int(time.time()) - 301), b), "tolerance 300 s"),
        (lambda h, b: (_headers(b, ts=int(time.time()) + 301), b), "tolerance 300 s"),
        (lambda h, b: ({**h, "X-MLflow-Timestamp": "yesterday"}, b), "malformed"),
        (lambda h, b: (_headers(b, delivery="x" * 200), b), "malformed"),
    ],
)
def test_verify_rejects(mutate: object, reason: str) -> None:
    body = _body()
    headers, sent = mutate(_headers(body), body)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=reason):
        verify(headers, sent, secret=SECRET, now=time.time())


def test_alias_event_maps_to_the_models_asset() -> None:
    event = parse(_body(), DELIVERY)
    assert isinstance(event, RegistryEvent)
    assert event.asset_uri == "mlops://churn/registry-event"
    assert event.extra() == {
        "event": "model_version_alias.created",
        "model_name": "churn",
        "version": "3",
        "alias": "challenger",
        "delivery_id": DELIVERY,
        "timestamp": "2026-11-23T08:00:00.000000+00:00",
        "source": "mlflow-webhook",
    }
    created = parse(
        _body("model_version", "created", name="churn", version="4", source="s3://x"), DELIVERY
    )
    assert isinstance(created, RegistryEvent) and created.alias is None and created.version == "4"


def test_other_events_and_test_pings_are_ignored() -> None:
    other = parse(_body("registered_model", "created", name="churn"), DELIVERY)
    assert isinstance(other, Ignored) and not other.test
    for event in HANDLED_EVENTS:
        entity, action = event.split(".")
        ping = parse(_body(entity, action, **TEST_PAYLOADS[event]), DELIVERY)
        assert isinstance(ping, Ignored) and ping.test


def test_test_payloads_are_mlflows_own() -> None:
    for event, payload in TEST_PAYLOADS.items():
        kind: Any = event  # MLflow types this as a Literal of its event names
        assert dict(get_example_payload_for_event(WebhookEvent.from_str(kind))) == payload


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"data": {}}', "entity"),
        (
            json.dumps({"entity": "model_version_alias", "action": "created", "data": []}).encode(),
            "'data'",
        ),
        (_body(name="churn", alias="challenger"), "data.version"),
    ],
)
def test_malformed_payloads(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        parse(body, DELIVERY)


def test_the_mount_never_imports_the_app() -> None:
    """The app imports the mount for its paths; the plugin wires the two, so there is no cycle
    (and loading the plugin imports no FastAPI)."""
    import ast
    import inspect

    from mlops_provider.webhooks import mount

    tree = ast.parse(inspect.getsource(mount))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not {name for name in imported if name and name.startswith("mlops_provider")}
