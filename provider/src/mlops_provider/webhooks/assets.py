"""Record a registry event as an Airflow asset event, exactly once per MLflow delivery.

Runs inside the API server, on its metadata-database session machinery, and creates the event
the way ``POST /api/v2/assets/events`` does: ``asset_manager.register_asset_change(...,
source_is_api=True)``, which also queues the DAG runs scheduled on the asset.

Replay protection has to hold across API-server restarts and between several API-server
workers, so it lives in the metadata database, in the same transaction as the asset event: the
delivery id is claimed as a row of Airflow's ``asset_state_store`` (primary key ``(asset_id,
key)``). Two concurrent deliveries of one id cannot both commit (the second hits the key), and a
later replay finds the row. That is stronger than searching asset events' ``extra`` for the id,
which two workers could both do before either commits. Claims older than a retention window
(twice the timestamp tolerance: older deliveries are rejected as stale anyway) are pruned as new
ones arrive, so the table does not grow without bound. The id is also kept in the event's
``extra`` for tracing.

A ``challenger`` alias move is also a release candidate: when a DAG declares the model's
``release-candidate`` asset (the deployment DAG, whose registry watcher,
:mod:`mlops_provider.triggers.candidates`, is the slow path for the same thing), the version is
claimed there (key ``release-candidate:v<n>``, the watcher's key; an insert, so of two claims one
wins) and the candidate asset event created in the same transaction. One version, one event,
whichever path saw it first; any other registry event (``champion`` moving at a promotion, a
new version) starts no release.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from mlops_provider.triggers.candidates import (
    CANDIDATE_ALIAS,
    candidate_claim_key,
    release_candidate_asset_uri,
)
from mlops_provider.webhooks.events import ALIAS_CREATED, SOURCE, RegistryEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CLAIM_PREFIX = "mlflow-webhook-delivery:"


@dataclass(frozen=True)
class Outcome:
    status: Literal["created", "ignored", "replayed"]
    detail: str
    asset_event_id: int | None = None


class _Abort(Exception):
    """Raised inside the transaction so the session rolls back everything it did."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def _replayed(event: RegistryEvent) -> _Abort:
    return _Abort(Outcome("replayed", f"delivery {event.delivery_id} was already recorded"))


def _active_asset_id(session: Session, uri: str) -> int | None:
    """The asset a DAG currently declares with this URI (active: referenced by a parsed DAG)."""
    from airflow.models.asset import AssetActive, AssetModel
    from sqlalchemy import and_, select

    return session.scalar(
        select(AssetModel.id)
        .join(AssetActive, and_(AssetActive.name == AssetModel.name, AssetActive.uri == uri))
        .where(AssetModel.uri == uri)
        .limit(1)
    )


def _claim(session: Session, asset_id: int, event: RegistryEvent, retention: timedelta) -> None:
    """Insert the delivery-id row (flush so a duplicate fails now) and prune expired claims."""
    from airflow.models.asset_state_store import AssetStateStoreModel
    from sqlalchemy import delete, select
    from sqlalchemy.exc import IntegrityError

    key = CLAIM_PREFIX + event.delivery_id
    exists = session.scalar(
        select(AssetStateStoreModel.key).where(
            AssetStateStoreModel.asset_id == asset_id, AssetStateStoreModel.key == key
        )
    )
    if exists is not None:
        raise _replayed(event)
    now = datetime.now(UTC)
    session.add(
        AssetStateStoreModel(
            asset_id=asset_id,
            key=key,
            value=json.dumps({"event": event.event, "version": event.version}),
            updated_at=now,
            last_updated_by_kind="api",
        )
    )
    try:
        session.flush()
    except IntegrityError:  # another worker committed the same id a moment ago
        raise _replayed(event) from None
    session.execute(
        delete(AssetStateStoreModel)
        .where(
            AssetStateStoreModel.asset_id == asset_id,
            AssetStateStoreModel.key.startswith(CLAIM_PREFIX),
            AssetStateStoreModel.updated_at < now - retention,
        )
        .execution_options(synchronize_session=False)
    )


def _claim_candidate(session: Session, asset_id: int, event: RegistryEvent) -> bool:
    """Insert the version's candidate claim; False when the watcher or a delivery holds it."""
    from airflow.models.asset_state_store import AssetStateStoreModel
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    key = candidate_claim_key(event.version)
    where = (AssetStateStoreModel.asset_id == asset_id, AssetStateStoreModel.key == key)
    if session.scalar(select(AssetStateStoreModel.key).where(*where)) is not None:
        return False
    claim = {"by": SOURCE, "version": event.version, "delivery_id": event.delivery_id}
    session.add(
        AssetStateStoreModel(
            asset_id=asset_id,
            key=key,
            value=json.dumps(claim),
            updated_at=datetime.now(UTC),
            last_updated_by_kind="api",
        )
    )
    try:
        session.flush()
    except IntegrityError:  # the watcher wrote it a moment ago: nothing of this delivery stays
        raise _Abort(
            Outcome("ignored", f"v{event.version} is already a claimed release candidate")
        ) from None
    return True


def _is_candidate(event: RegistryEvent) -> bool:
    return event.event == ALIAS_CREATED and event.alias == CANDIDATE_ALIAS


def _register(session: Session, asset_id: int, extra: dict[str, object]) -> int:
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel

    asset = session.get(AssetModel, asset_id)
    created = (
        None
        if asset is None
        else asset_manager.register_asset_change(
            asset=asset, extra=extra, source_is_api=True, api_user_teams=set(), session=session
        )
    )
    if created is None:  # the asset vanished between our query and now
        raise _Abort(Outcome("ignored", f"asset {asset_id} disappeared"))
    return int(created.id)


def record_registry_event(event: RegistryEvent, *, retention: timedelta) -> Outcome:
    """Create the asset events for ``event`` unless its delivery was seen or no DAG wants it:
    the raw registry event, and for a new ``challenger`` the release candidate (once per
    version)."""
    from airflow.utils.session import create_session

    raw_uri = event.asset_uri
    candidate_uri = release_candidate_asset_uri(event.model_name)
    try:
        with create_session(scoped=False) as session:
            raw_id = _active_asset_id(session, raw_uri)
            candidate_id = (
                _active_asset_id(session, candidate_uri) if _is_candidate(event) else None
            )
            if raw_id is None and candidate_id is None:
                return Outcome(
                    "ignored", f"no DAG declares an asset with uri {raw_uri!r}; nothing to trigger"
                )
            # The delivery id is remembered on the first asset this delivery touches.
            remembered_on = raw_id if raw_id is not None else candidate_id
            assert remembered_on is not None  # one of the two, checked above
            _claim(session, remembered_on, event, retention)
            done: list[str] = []
            created_id: int | None = None
            if raw_id is not None:
                created_id = _register(session, raw_id, event.extra())
                done.append(f"asset event {created_id} on {raw_uri} ({SOURCE})")
            if candidate_id is not None:
                if _claim_candidate(session, candidate_id, event):
                    created_id = _register(session, candidate_id, event.extra())
                    done.append(f"asset event {created_id} on {candidate_uri} ({SOURCE})")
                else:
                    done.append(f"v{event.version} is already a claimed release candidate")
            session.flush()
            if created_id is None:
                return Outcome("ignored", "; ".join(done))
            return Outcome("created", "; ".join(done), asset_event_id=created_id)
    except _Abort as abort:
        return abort.outcome
