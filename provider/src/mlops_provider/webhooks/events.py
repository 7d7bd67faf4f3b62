"""Map a verified MLflow webhook payload to the asset event a DAG schedules on (pure logic).

Payload (MLflow 3): ``{"entity": "model_version_alias", "action": "created",
"timestamp": "<ISO 8601>", "data": {"name": ..., "alias": ..., "version": ...}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ALIAS_CREATED = "model_version_alias.created"
VERSION_CREATED = "model_version.created"
#: Events that become asset events; every other registry event is acknowledged and ignored.
HANDLED_EVENTS = frozenset({ALIAS_CREATED, VERSION_CREATED})

#: What MLflow's "test webhook" button sends (``<Payload>.example()`` in mlflow/webhooks/types.py;
#: a test pins these to the installed mlflow). A ping proves the secret works; it is not an event.
TEST_PAYLOADS: dict[str, dict[str, Any]] = {
    ALIAS_CREATED: {"name": "example_model", "alias": "example_alias", "version": "1"},
    VERSION_CREATED: {
        "name": "example_model",
        "version": "1",
        "source": "models:/123",
        "run_id": "abcd1234abcd5678",
        "tags": {"example_key": "example_value"},
        "description": "An example model version",
    },
}

SOURCE = "mlflow-webhook"


def registry_event_asset_uri(model_name: str) -> str:
    """The asset URI a DAG declares to wake on this model's registry events."""
    return f"mlops://{model_name}/registry-event"


def registry_event_asset_name(model_name: str) -> str:
    return f"{model_name}_registry_event"


class PayloadError(ValueError):
    """The (authentic) body is not a registry event we can read; answer 400."""


@dataclass(frozen=True)
class RegistryEvent:
    """One handled registry event, ready to become an asset event."""

    event: str
    model_name: str
    version: str
    alias: str | None
    timestamp: str
    delivery_id: str

    @property
    def asset_uri(self) -> str:
        return registry_event_asset_uri(self.model_name)

    def extra(self) -> dict[str, Any]:
        """The asset event's ``extra``: what happened, to which version, and which delivery."""
        return {
            "event": self.event,
            "model_name": self.model_name,
            "version": self.version,
            "alias": self.alias,
            "delivery_id": self.delivery_id,
            "timestamp": self.timestamp,
            "source": SOURCE,
        }


@dataclass(frozen=True)
class Ignored:
    """Authentic and well formed, but nothing to do (other event, or MLflow's test ping)."""

    event: str
    reason: str
    test: bool = False


def _text(data: dict[str, Any], key: str, event: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{event}: data.{key} must be a non-empty string, got {value!r}")
    return value.strip()


def parse(body: bytes, delivery_id: str) -> RegistryEvent | Ignored:
    """Read one payload; raise :class:`PayloadError` for anything we cannot interpret."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise PayloadError(f"body is not JSON: {err}") from None
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object with entity, action, timestamp, data")
    entity, action = payload.get("entity"), payload.get("action")
    if not isinstance(entity, str) or not isinstance(action, str) or not entity or not action:
        raise PayloadError("body lacks string fields 'entity' and 'action' (not an MLflow event)")
    event = f"{entity}.{action}"
    if event not in HANDLED_EVENTS:
        return Ignored(event, f"event {event} is not one this bridge handles")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise PayloadError(f"{event}: 'data' must be an object")
    if data == TEST_PAYLOADS[event]:
        return Ignored(event, "MLflow test delivery (example payload): signature OK", test=True)
    timestamp = payload.get("timestamp")
    return RegistryEvent(
        event=event,
        model_name=_text(data, "name", event),
        version=_text(data, "version", event),
        alias=_text(data, "alias", event) if event == ALIAS_CREATED else None,
        timestamp=timestamp if isinstance(timestamp, str) else "",
        delivery_id=delivery_id,
    )
