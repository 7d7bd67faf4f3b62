"""MlflowReleaseCandidateTrigger (the deployment DAG's registry watcher) against a real MLflow
server, with its claims in a real Airflow metadata database shared with the webhook bridge's
code (mlops_provider/webhooks/assets.py). The live triggerer is tests/e2e/test_faults_live.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.hooks.mlflow import MlflowHook
from mlops_provider.triggers.candidates import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    DECISION_TAG,
    CandidateWatch,
    CandidateWatchError,
    MlflowReleaseCandidateTrigger,
    candidate_claim_key,
    judge,
    release_candidate_asset_uri,
)
from tests.provider.conftest import Registry

pytestmark = pytest.mark.timeout(300)

POLL_S = 0.2
CONSUMER_DAG = "release_candidate_consumer"


class DatabaseClaims:
    """The asset's state store as the triggerer's ``asset_state_store`` accessor writes it (an
    upsert through the execution API), here straight into the same table."""

    def __init__(self, asset_id: int) -> None:
        self.asset_id = asset_id

    def _get(self, key: str) -> Any:
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            value = session.scalar(
                select(AssetStateStoreModel.value).where(
                    AssetStateStoreModel.asset_id == self.asset_id, AssetStateStoreModel.key == key
                )
            )
        return None if value is None else json.loads(value)

    def _set(self, key: str, value: Any) -> None:
        from airflow.models.asset_state_store import AssetStateStoreModel
        from airflow.utils.session import create_session

        with create_session() as session:
            session.merge(
                AssetStateStoreModel(
                    asset_id=self.asset_id,
                    key=key,
                    value=json.dumps(value),
                    updated_at=datetime.now(UTC),
                    last_updated_by_kind="watcher",
                )
            )

    async def aget(self, key: str, default: Any = None) -> Any:
        value = await asyncio.to_thread(self._get, key)
        return default if value is None else value

    async def aset(self, key: str, value: Any) -> None:
        await asyncio.to_thread(self._set, key, value)


def _declare_candidate_asset(folder: Path, model: str) -> int:
    """A DAG scheduled on the model's release-candidate asset, synced like the DAG processor
    does (the asset is then active: the bridge records candidates on it)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    uri = release_candidate_asset_uri(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "consumer.py").write_text(
        textwrap.dedent(f"""
        import pendulum
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG, Asset

        with DAG(
            {CONSUMER_DAG + "_" + model!r},
            schedule=[Asset(name="{model}_release_candidate", uri="{uri}")],
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        ):
            EmptyOperator(task_id="noop")
        """)
    )
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == uri))
    assert asset_id is not None
    return int(asset_id)


@pytest.fixture
def claims(registry: Registry, airflow_db: Path, tmp_path: Path) -> DatabaseClaims:
    return DatabaseClaims(_declare_candidate_asset(tmp_path / "dags", registry.model))


def _watcher(
    registry: Registry, store: Any, confirmations: int = 2
) -> MlflowReleaseCandidateTrigger:
    trigger = MlflowReleaseCandidateTrigger(
        registry.model, poll_interval=POLL_S, confirmations=confirmations
    )
    trigger.asset_state_store = store
    return trigger


class Events:
    """A watcher's run() consumed in the background; the events it yields, in order."""

    def __init__(self, trigger: MlflowReleaseCandidateTrigger) -> None:
        self.trigger = trigger
        self.payloads: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def _consume(self, events: AsyncIterator[Any]) -> None:
        async for event in events:
            self.payloads.append(dict(event.payload))

    async def __aenter__(self) -> Events:
        self.task = asyncio.create_task(self._consume(self.trigger.run()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # the watcher must never end on its own
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def wait_for(self, count: int, within: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.payloads) < count:
            assert self.task is not None and not self.task.done(), "the watcher ended"
            assert time.monotonic() < deadline, f"{self.payloads} after {within} s"
            await asyncio.sleep(0.05)
        return list(self.payloads)


def test_constants_are_the_steps_own() -> None:
    from mlops_steps.common.tracking import CHALLENGER, CHAMPION
    from mlops_steps.release.ledger import STATUS_TAG

    assert (CANDIDATE_ALIAS, CHAMPION_ALIAS, DECISION_TAG) == (CHALLENGER, CHAMPION, STATUS_TAG)


def test_is_an_event_trigger_and_serializes_round_trip() -> None:
    from airflow.triggers.base import BaseEventTrigger

    trigger = MlflowReleaseCandidateTrigger("churn", mlflow_conn_id="mlflow_prod", poll_interval=7)
    assert isinstance(trigger, BaseEventTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_provider.triggers.candidates.MlflowReleaseCandidateTrigger"
    again = MlflowReleaseCandidateTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["poll_interval"] == 7.0 and kwargs["confirmations"] == 2
    with pytest.raises(ValueError, match="poll_interval must be > 0"):
        MlflowReleaseCandidateTrigger("churn", poll_interval=0)


def test_what_counts_as_a_release_candidate_on_real_versions(registry: Registry) -> None:
    hook = MlflowHook()

    def now() -> tuple[str | None, str]:
        sighting = judge(hook.get_version_by_alias(registry.model, CANDIDATE_ALIAS))
        return sighting.candidate, sighting.reason

    assert now() == (None, "no version has the alias 'challenger'")
    first = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, first)
    assert now() == (first, f"v{first} is READY and undecided")
    registry.client.set_model_version_tag(registry.model, first, DECISION_TAG, "rejected")
    assert now() == (None, f"v{first} was already decided ({DECISION_TAG}=rejected)")
    second = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, second)
    registry.client.set_registered_model_alias(registry.model, CHAMPION_ALIAS, second)
    assert now() == (None, f"v{second} is already the champion")


def test_a_candidate_is_claimed_after_its_confirmations_and_never_again() -> None:
    watch = CandidateWatch(confirmations=2)
    seen = [judge({"version": "3", "aliases": ["challenger"], "tags": {}})] * 4
    assert [watch.observe(s) for s in seen[:2]] == [None, "3"]
    watch.settle("3")
    assert [watch.observe(s) for s in seen[2:]] == [None, None]
    gone = judge(None)
    four = judge({"version": "4", "aliases": ["challenger"], "tags": {}})
    # A streak is consecutive: a poll without the candidate starts it over.
    assert [watch.observe(s) for s in (four, gone, four, four)] == [None, None, None, "4"]


def test_the_watcher_emits_once_per_version_and_not_for_a_promotion(
    registry: Registry, claims: DatabaseClaims
) -> None:
    model, client = registry.model, registry.client

    async def scenario() -> list[dict[str, Any]]:
        async with Events(_watcher(registry, claims)) as events:
            first = registry.add_version()
            client.set_registered_model_alias(model, CANDIDATE_ALIAS, first)
            started = time.monotonic()
            await events.wait_for(1, within=30)
            assert time.monotonic() - started < 2 * POLL_S + 5
            await asyncio.sleep(10 * POLL_S)  # still the challenger, still undecided: no repeat
            second = registry.add_version()
            client.set_registered_model_alias(model, CANDIDATE_ALIAS, second)
            await events.wait_for(2, within=30)
            # The promotion: decision tag, champion moves, challenger removed.
            client.set_model_version_tag(model, second, DECISION_TAG, "promoted")
            client.set_registered_model_alias(model, CHAMPION_ALIAS, second)
            client.delete_registered_model_alias(model, CANDIDATE_ALIAS)
            await asyncio.sleep(10 * POLL_S)
            return list(events.payloads)

    payloads = asyncio.run(scenario())
    assert payloads == [
        {"model_name": model, "version": "1", "source": "mlflow-registry-watcher"},
        {"model_name": model, "version": "2", "source": "mlflow-registry-watcher"},
    ]
    held = asyncio.run(claims.aget(candidate_claim_key("1")))
    assert held["by"] == "mlflow-registry-watcher" and held["version"] == "1"


def test_a_restarted_watcher_emits_nothing_twice(
    registry: Registry, claims: DatabaseClaims
) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, version)

    async def run_once(settle_s: float) -> list[dict[str, Any]]:
        async with Events(_watcher(registry, claims)) as events:
            await asyncio.sleep(settle_s)
            return list(events.payloads)

    first = asyncio.run(run_once(3.0))
    restarted = asyncio.run(run_once(3.0))  # a new trigger instance: memory gone, claim kept
    assert [p["version"] for p in first] == [version]
    assert restarted == []


def test_webhook_and_watcher_share_one_claim_per_version(
    registry: Registry, claims: DatabaseClaims
) -> None:
    from mlops_provider.webhooks.assets import record_registry_event
    from mlops_provider.webhooks.events import ALIAS_CREATED, VERSION_CREATED, RegistryEvent

    def delivery(version: str, alias: str | None, event: str = ALIAS_CREATED) -> Any:
        stamp = datetime.now(UTC).isoformat()
        return record_registry_event(
            RegistryEvent(event, registry.model, version, alias, stamp, str(uuid.uuid4())),
            retention=timedelta(minutes=11),
        )

    webhook_first = registry.add_version()
    assert delivery(webhook_first, CANDIDATE_ALIAS).status == "created"  # the fast path
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, webhook_first)

    async def watch(settle_s: float) -> list[dict[str, Any]]:
        async with Events(_watcher(registry, claims)) as events:
            await asyncio.sleep(settle_s)
            return list(events.payloads)

    assert asyncio.run(watch(3.0)) == []  # the webhook's claim holds it
    watcher_first = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, watcher_first)
    assert [p["version"] for p in asyncio.run(watch(3.0))] == [watcher_first]
    late = delivery(watcher_first, CANDIDATE_ALIAS)  # a slow webhook after the watcher
    assert (late.status, late.detail) == (
        "ignored",
        f"v{watcher_first} is already a claimed release candidate",
    )
    # Registry events that are no candidate start nothing: champion moves, new versions.
    for ignored in (
        delivery(watcher_first, CHAMPION_ALIAS),
        delivery(watcher_first, None, VERSION_CREATED),
    ):
        assert ignored.status == "ignored" and "no DAG declares" in ignored.detail


def test_outside_an_asset_watcher_the_claim_fails_closed(registry: Registry) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, version)
    trigger = _watcher(registry, None, confirmations=1)

    with pytest.raises(CandidateWatchError, match="runs only as an AssetWatcher"):
        asyncio.run(trigger.poll(CandidateWatch(confirmations=1), version))


def test_watchers_of_one_registry_share_one_search_per_poll(
    registry: Registry,
    claims: DatabaseClaims,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Two models' watchers on one connection: one shared key, one registry search per poll
    (through Airflow's shared-stream contract, fanned out here as the triggerer does), and
    each watcher emits its own model's candidate only."""
    other = f"{registry.model}_other"
    registry.client.create_registered_model(other)
    mine = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, CANDIDATE_ALIAS, mine)
    theirs = registry.client.create_model_version(other, source="s3://bucket/model").version
    registry.client.set_registered_model_alias(other, CANDIDATE_ALIAS, theirs)
    # Each model's asset has its own state store (the same version number is two candidates).
    their_claims = DatabaseClaims(_declare_candidate_asset(tmp_path / "other-dags", other))
    watchers = [_watcher(registry, claims), _watcher(registry, their_claims)]
    watchers[1].model_name = other
    assert watchers[0].shared_stream_key() == watchers[1].shared_stream_key()
    assert (
        _watcher(registry, claims).shared_stream_key()
        != MlflowReleaseCandidateTrigger(
            registry.model, mlflow_conn_id="another_mlflow", poll_interval=POLL_S
        ).shared_stream_key()
    )

    async def fanned_out(polls: int) -> list[list[dict[str, Any]]]:
        stream = type(watchers[0]).open_shared_stream(watchers[0].serialize()[1])
        snapshots = [await anext(stream) for _ in range(polls)]
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator

        async def replay() -> AsyncIterator[dict[str, Any]]:
            for snapshot in snapshots:
                yield snapshot

        return [[e.payload async for e in w.filter_shared_stream(replay())] for w in watchers]

    searches: list[int] = []
    search = MlflowHook.asearch_model_aliases

    async def counted(hook: MlflowHook, page_size: int = 1000) -> dict[str, dict[str, str]]:
        found = await search(hook, page_size)  # the real search, against the real server
        searches.append(len(found))
        return found

    monkeypatch.setattr(MlflowHook, "asearch_model_aliases", counted)
    mine_events, their_events = asyncio.run(fanned_out(polls=3))
    assert len(searches) == 3 and min(searches) >= 2  # one per poll, holding both models
    assert [e["version"] for e in mine_events] == [mine]
    assert [(e["model_name"], e["version"]) for e in their_events] == [(other, str(theirs))]
