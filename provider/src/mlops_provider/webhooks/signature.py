"""Verify MLflow's webhook signature, timestamp and delivery id (no I/O, no Airflow).

MLflow 3 (``mlflow/webhooks/delivery.py``) sends::

    X-MLflow-Delivery-Id: <uuid4>
    X-MLflow-Timestamp:   <unix seconds>
    X-MLflow-Signature:   v1,<base64(HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{body}"))>

where ``body`` is exactly the bytes of the request body (UTF-8 JSON). We sign the raw bytes we
received, never a re-serialised parse, so whitespace or key order cannot break verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300.0

# MLflow sends a UUID; anything else within this alphabet is accepted, nothing longer (the id is
# stored as a database key).
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class SignatureError(ValueError):
    """The delivery is not provably from MLflow (or is stale); answer 401, do nothing."""


@dataclass(frozen=True)
class VerifiedDelivery:
    delivery_id: str
    timestamp: int


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The header value MLflow would send for this body (used by tests and tools)."""
    content = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup that works on plain dicts as well as Starlette's headers."""
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise SignatureError(f"missing header {name}")
    return value.strip()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> VerifiedDelivery:
    """Check signature (constant time), then timestamp freshness; raise SignatureError.

    Replay of a fresh, validly signed delivery is the caller's check (it needs storage).
    """
    delivery_id = _header(headers, DELIVERY_ID_HEADER)
    timestamp_s = _header(headers, TIMESTAMP_HEADER)
    provided = _header(headers, SIGNATURE_HEADER)
    if not _DELIVERY_ID.match(delivery_id):
        raise SignatureError(f"malformed {DELIVERY_ID_HEADER}")
    if not timestamp_s.isdigit():
        raise SignatureError(f"malformed {TIMESTAMP_HEADER} (expected unix seconds)")

    expected = sign(secret, delivery_id, timestamp_s, body).encode("ascii")
    # Standard-Webhooks style: several space-separated "v1,<sig>" entries may be sent (rotation).
    matched = False
    for candidate in provided.split():
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    if not matched:
        raise SignatureError("signature does not match (wrong secret, or body altered)")

    timestamp = int(timestamp_s)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            f"timestamp {timestamp} is {now - timestamp:+.0f} s from now "
            f"(tolerance {tolerance_s:g} s): stale or replayed delivery, or clocks out of sync"
        )
    return VerifiedDelivery(delivery_id, timestamp)
