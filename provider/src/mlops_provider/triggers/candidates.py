"""Event-driven releases: an asset watcher that sees a new release candidate in the MLflow registry.

The deployment DAG schedules on the model's ``release-candidate`` asset, which carries
:class:`MlflowReleaseCandidateTrigger` as its ``AssetWatcher``: the triggerer polls the registry
every ``poll_interval`` seconds and emits one asset event when a version becomes a new, READY,
undecided candidate (alias ``challenger`` on it, not the champion, no ``mlops.deploy.status``
decision yet; what the release's resolve step accepts). The webhook bridge is the fast path for
the same asset; both claim the version in the asset's state store (key
:func:`candidate_claim_key`) before emitting, so one version gives one event and one run, across
triggerer restarts too (the claim is in the metadata database, not in the trigger).

The watcher claims only a candidate it saw on ``confirmations`` polls in a row: a delivered
webhook (milliseconds after the alias moved) has claimed it by then, so the bridge's atomic
insert and the watcher's read-then-write never race. A lost webhook's candidate is released
within ``confirmations x poll_interval`` plus the scheduler's loop.

The watchers of all models on one MLflow connection share one poll (Airflow 3.3's shared trigger
streams, :meth:`MlflowReleaseCandidateTrigger.shared_stream_key`): one registry search per
interval lists every model's aliases, and a watcher reads a version only when its model's
``challenger`` names one it has not settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from mlops_provider.hooks.mlflow import MlflowApiError, MlflowHook

#: mlops_steps.common.tracking.CHALLENGER / CHAMPION (the provider does not import the steps'
#: MLflow side; tests/provider/triggers/test_candidate_trigger.py pins them equal).
CANDIDATE_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
#: mlops_steps.release.ledger.STATUS_TAG: set once a release decided about the version.
DECISION_TAG = "mlops.deploy.status"
READY = "READY"
SOURCE = "mlflow-registry-watcher"
CLAIM_PREFIX = "release-candidate:v"


def release_candidate_asset_uri(model_name: str) -> str:
    """The asset the deployment DAG schedules on (``<model>_release_candidate``)."""
    return f"mlops://{model_name}/release-candidate"


def candidate_claim_key(version: str | int) -> str:
    """The state-store key that says "version ``version`` already started a release"."""
    return f"{CLAIM_PREFIX}{version}"


class CandidateWatchError(RuntimeError):
    """The watcher cannot keep its exactly-once promise (e.g. run outside an asset watcher)."""


@dataclass(frozen=True)
class Sighting:
    """One poll's answer: the version that is a release candidate now (else None), and why."""

    candidate: str | None
    reason: str


def judge(version: Mapping[str, Any] | None) -> Sighting:
    """Is the version ``challenger`` points to (``None``: no alias) a release candidate?"""
    if version is None:
        return Sighting(None, f"no version has the alias {CANDIDATE_ALIAS!r}")
    number = str(version.get("version", ""))
    status = version.get("status", READY)
    if status != READY:
        return Sighting(None, f"v{number} is {status}, not {READY}")
    if CHAMPION_ALIAS in (version.get("aliases") or []):
        return Sighting(None, f"v{number} is already the champion")
    tags: Mapping[str, str] = version.get("tags") or {}
    if DECISION_TAG in tags:
        return Sighting(
            None, f"v{number} was already decided ({DECISION_TAG}={tags[DECISION_TAG]})"
        )
    return Sighting(number, f"v{number} is {READY} and undecided")


@dataclass
class CandidateWatch:
    """What one watcher remembers between polls (memory only: the durable part is the claim).

    :meth:`observe` returns a version to claim once it was the candidate on ``confirmations``
    polls in a row, and never again after :meth:`settle` (claimed here or elsewhere).
    """

    confirmations: int = 2
    streak_version: str | None = None
    streak: int = 0
    settled: set[str] = field(default_factory=set)

    def observe(self, sighting: Sighting) -> str | None:
        number = sighting.candidate
        if number is None or number in self.settled:
            self.streak_version, self.streak = number, 0
            return None
        self.streak = self.streak + 1 if number == self.streak_version else 1
        self.streak_version = number
        return number if self.streak >= self.confirmations else None

    def settle(self, number: str) -> None:
        self.settled.add(number)
        self.streak_version, self.streak = None, 0


class MlflowReleaseCandidateTrigger(BaseEventTrigger):
    """Watch ``model_name@challenger``; emit ``{"model_name", "version", "source"}`` once per
    new undecided candidate (see the module docstring). Runs forever: registry errors are logged
    and polled again (a watcher that ended would silently stop the safety net)."""

    def __init__(
        self,
        model_name: str,
        *,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        poll_interval: float = 20.0,
        confirmations: int = 2,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        if not model_name:
            raise ValueError("model_name is required (the registered model to watch)")
        if poll_interval <= 0 or confirmations < 1:
            raise ValueError(
                f"poll_interval must be > 0 and confirmations >= 1, got {poll_interval!r}, "
                f"{confirmations!r}"
            )
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)
        self.confirmations = int(confirmations)
        self.request_timeout = float(request_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": self.model_name,
                "mlflow_conn_id": self.mlflow_conn_id,
                "poll_interval": self.poll_interval,
                "confirmations": self.confirmations,
                "request_timeout": self.request_timeout,
            },
        )

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(self.mlflow_conn_id, timeout=self.request_timeout)

    async def claim(self, number: str) -> bool:
        """Claim ``number`` in the watched asset's state store; False if someone already did."""
        store = self.asset_state_store
        if store is None:
            raise CandidateWatchError(
                f"{type(self).__name__} for {self.model_name!r} has no asset state store: it "
                f"runs only as an AssetWatcher of the release-candidate asset (the triggerer "
                f"injects the store), where its claims are shared with the webhook bridge"
            )
        key = candidate_claim_key(number)
        holder = await store.aget(key)
        if holder is not None:
            self.log.info("%s v%s was already claimed: %s", self.model_name, number, holder)
            return False
        claimed_at = datetime.now(UTC).isoformat(timespec="seconds")
        await store.aset(key, {"by": SOURCE, "version": number, "claimed_at": claimed_at})
        return True

    def shared_stream_key(self) -> Hashable:
        """Every watcher of one MLflow connection at one cadence shares one poll: a single
        registry search returns every model's aliases (one request per poll for all models,
        instead of one or two per model); each watcher then reads its own model's challenger."""
        return ("mlflow-registry-aliases", self.mlflow_conn_id, self.poll_interval,
                self.request_timeout)  # fmt: skip

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """One registry search per ``poll_interval``, forever: ``{"aliases": {model: {alias:
        version}}}``, or ``{"error": ...}`` when the registry did not answer (the watchers log
        it; the next poll tries again, so the safety net never stops)."""
        hook = MlflowHook(kwargs["mlflow_conn_id"], timeout=kwargs["request_timeout"])
        while True:
            try:
                yield {"aliases": await hook.asearch_model_aliases()}
            except MlflowApiError as err:
                yield {"error": str(err)}
                if not err.transient:  # re-read the connection: it may have been fixed
                    hook = MlflowHook(kwargs["mlflow_conn_id"], timeout=kwargs["request_timeout"])
            await asyncio.sleep(kwargs["poll_interval"])

    async def filter_shared_stream(
        self, shared_stream: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[TriggerEvent]:
        """This model's candidates from the shared polls: judged, claimed, emitted once."""
        watch = CandidateWatch(self.confirmations)
        async for snapshot in shared_stream:
            if "error" in snapshot:
                self.log.warning("Registry poll failed (polling again): %s", snapshot["error"])
                continue
            number = snapshot["aliases"].get(self.model_name, {}).get(CANDIDATE_ALIAS)
            try:
                event = await self.poll(watch, number)
            except MlflowApiError as err:
                self.log.warning("Reading %s v%s failed (polling again): %s",
                                 self.model_name, number, err)  # fmt: skip
                if not err.transient:
                    self.__dict__.pop("hook", None)
                continue
            if event is not None:
                yield event

    async def poll(self, watch: CandidateWatch, number: str | None) -> TriggerEvent | None:
        """One poll's verdict on ``number`` (the version ``challenger`` names, else None): read
        it (unless already settled here), judge it, claim it and return the event when due."""
        if number is None:
            sighting = judge(None)
        elif number in watch.settled:  # claimed before: no need to read it again
            sighting = Sighting(number, f"v{number} was settled by this watcher")
        else:
            sighting = judge(await self.hook.aget_model_version(self.model_name, number))
        due = watch.observe(sighting)
        if due is None:
            return None
        claimed = await self.claim(due)
        watch.settle(due)
        if not claimed:
            return None
        self.log.info("Release candidate %s v%s: %s", self.model_name, due, sighting.reason)
        return TriggerEvent({"model_name": self.model_name, "version": due, "source": SOURCE})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Standalone (a triggerer without the shared-stream manager, and tests): the same
        poll and filter as the shared path, for this watcher alone."""
        self.log.info(
            "Watching %s@%s every %g s (claim after %d sightings)",
            self.model_name,
            CANDIDATE_ALIAS,
            self.poll_interval,
            self.confirmations,
        )
        polls = type(self).open_shared_stream(self.serialize()[1])
        async for event in self.filter_shared_stream(polls):
            yield event
