"""Faults that only a live Airflow can show: a scheduler, a triggerer (and its registry watcher),
pools, the webhook bridge in the API server, and task processes that can die.

One stack per module (tests/e2e/faults_stack.py): Airflow's four components with this project's
DAGs for a model ``faults``, one MLflow server, one model service behind a loopback proxy. The
tests run in file order and each starts from the registry, traffic and ledger the previous one
left: every scenario is one step of a single model's history. Every wait is bounded.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.e2e.faults_stack import (
    DEPLOYMENT,
    FAST_RELEASE,
    MODEL,
    REGISTRY_POLL_S,
    TRAINING,
    Stack,
    start_stack,
)

pytestmark = pytest.mark.e2e
stack = pytest.fixture(scope="module")(start_stack)

ALIAS_CREATED = "model_version_alias.created"
#: A lost webhook's candidate: two polls of the watcher, then the scheduler's loop and the start
#: of a run on two busy cores.
WATCHER_BOUND_S = 2 * REGISTRY_POLL_S + 30
#: Long enough for a watcher to have emitted anything it was going to: two polls and a margin.
QUIET_S = 2 * REGISTRY_POLL_S + 15
RUN_TIMEOUT_S = 300
POOL_TASKS = ("canary", "analyze_canary", "promote", "rollback")


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _runs_since(stack: Stack, dag_id: str, since: datetime) -> list[dict[str, Any]]:
    return [r for r in stack.rest.runs(dag_id) if _time(r["queued_at"] or r["run_after"]) >= since]


def test_overlapping_releases_run_one_at_a_time_and_the_second_fails_on_the_moved_champion(
    stack: Stack,
) -> None:
    champion = stack.aliases()["champion"]
    versions = [stack.prepare(compared_to=champion) for _ in range(2)]
    runs = {v: stack.trigger(DEPLOYMENT, {**FAST_RELEASE, "version": v}) for v in versions}
    done = {v: stack.finish(DEPLOYMENT, run_id, 2 * RUN_TIMEOUT_S) for v, run_id in runs.items()}

    states = {v: run["state"] for v, run in done.items()}
    assert sorted(states.values()) == ["failed", "success"], states
    (winner,) = [v for v, s in states.items() if s == "success"]
    (loser,) = [v for v, s in states.items() if s == "failed"]
    # Serialised: the second release started after the first one ended, and no two tasks of
    # the promotion pool ever ran at once.
    assert _time(done[loser]["start_date"]) >= _time(done[winner]["end_date"])
    # Only tasks that ran hold a slot: the scheduler stamps the tasks it skips or marks
    # upstream_failed (try 0) with the moment it decided, which is no run at all.
    spans = sorted(
        (_time(t["start_date"]), _time(t["end_date"]), v, t["task_id"], t["state"])
        for v in versions
        for t in stack.rest.task_instances(DEPLOYMENT, runs[v])
        if t["task_id"] in POOL_TASKS and t["try_number"] > 0
        and t["start_date"] and t["end_date"]
    )  # fmt: skip
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if a[1] > b[0]]
    assert not overlaps, overlaps
    # The loser fails because the champion it was evaluated against is gone.
    loser_states = stack.states(DEPLOYMENT, runs[loser])
    assert loser_states["resolve"] == "failed", loser_states
    assert loser_states["promote"] != "success" and loser_states["canary"] != "success"
    message = f"was evaluated against champion v{champion}, but the champion is now v{winner}"
    assert message in stack.task_log(DEPLOYMENT, runs[loser], "resolve")
    # One release: the winner serves, the loser left no trace but its failed run.
    assert stack.aliases() == {"champion": winner, "previous_champion": champion}
    assert stack.traffic() == {"stable": winner, "canary": None, "canary_weight": 0.0}
    assert [(e["version"], e["decision"]) for e in stack.ledger()] == [(winner, "promoted")]
    assert "mlops.deploy.status" not in stack.tags(loser)


def test_a_challenger_whose_webhook_is_lost_is_released_once_by_the_watcher(
    stack: Stack,
) -> None:
    champion = stack.aliases()["champion"]
    version = stack.prepare(compared_to=champion)
    events_before = len(stack.candidate_events())
    moved = datetime.now(UTC)
    stack.client.set_registered_model_alias(MODEL, "challenger", version)
    # MLflow sent the event, signed; it reached the recorder and never Airflow: lost.
    stack.wait(
        "MLflow's webhook delivery of the new challenger",
        lambda: stack.registry_deliveries(ALIAS_CREATED, version),
        60,
    )
    (run,) = stack.wait(
        "the watcher's deployment run",
        lambda: [r for r in _runs_since(stack, DEPLOYMENT, moved) if r["start_date"]],
        WATCHER_BOUND_S + 60,
    )
    started_after_s = (_time(run["start_date"]) - moved).total_seconds()
    queued_after_s = (_time(run["queued_at"]) - moved).total_seconds()
    print(f"\nMEASURED challenger set -> run queued {queued_after_s:.1f} s, started "
          f"{started_after_s:.1f} s (poll {REGISTRY_POLL_S:g} s, no webhook)")  # fmt: skip
    assert run["run_type"] == "asset_triggered", run
    assert started_after_s <= WATCHER_BOUND_S, started_after_s
    (event,) = stack.candidate_events()[events_before:]
    assert event["extra"]["payload"] == {
        "model_name": MODEL,
        "version": version,
        "source": "mlflow-registry-watcher",
    }, event

    # The candidate stays undecided while the approval waits: a restarted triggerer sees it
    # again, finds the claim and emits nothing.
    triggerer_log = stack.logs / "triggerer.log"
    mark = triggerer_log.stat().st_size
    stack.restart_triggerer()
    stack.wait(
        "the restarted triggerer's watcher to find the claim",
        lambda: "was already claimed" in _read_from(triggerer_log, mark),
        QUIET_S + 90,
    )
    assert len(stack.candidate_events()) == events_before + 1
    assert [r["dag_run_id"] for r in _runs_since(stack, DEPLOYMENT, moved)] == [run["dag_run_id"]]

    run_id = stack.approve(version, timeout=RUN_TIMEOUT_S)  # answered at once (held to settle)
    answered_s = (datetime.now(UTC) - moved).total_seconds()
    assert run_id == run["dag_run_id"]
    finished = stack.finish(DEPLOYMENT, run_id, RUN_TIMEOUT_S)
    assert finished["state"] == "success", stack.states(DEPLOYMENT, run_id)
    canary = stack.rest.task_instance(DEPLOYMENT, run_id, "canary")
    live_s = (_time(canary["end_date"]) - moved).total_seconds()
    print(f"MEASURED challenger set -> first canary step live {live_s:.1f} s (approval answered "
          f"at {answered_s:.1f} s, after the triggerer-restart check)")  # fmt: skip
    assert stack.aliases() == {"champion": version, "previous_champion": champion}
    assert stack.traffic() == {"stable": version, "canary": None, "canary_weight": 0.0}
    assert (stack.ledger()[-1]["version"], stack.ledger()[-1]["decision"]) == (version, "promoted")
    assert stack.ledger()[-1]["dag_run_id"] == run_id
    # The promotion moved champion (and removed challenger): no event, no second run.
    time.sleep(QUIET_S)
    runs = _runs_since(stack, DEPLOYMENT, moved)
    print(f"MEASURED deployment runs for this release: {len(runs)}")
    assert [r["dag_run_id"] for r in runs] == [run_id]
    assert len(stack.candidate_events()) == events_before + 1


def _replay(url: str, delivery: Any) -> requests.Response:
    """Send a recorded delivery again exactly: same body bytes, same signed headers."""
    headers = {
        k: v
        for k, v in delivery.headers.items()
        if k.lower().startswith("x-mlflow-") or k.lower() in ("content-type", "user-agent")
    }
    return requests.post(url, data=delivery.body, headers=headers, timeout=30)


def test_the_same_signed_delivery_twice_releases_once(stack: Stack) -> None:
    champion = stack.aliases()["champion"]
    version = stack.prepare(compared_to=champion)
    events_before = len(stack.candidate_events())
    moved = datetime.now(UTC)
    stack.client.set_registered_model_alias(MODEL, "challenger", version)
    (delivery,) = stack.wait(
        "MLflow's webhook delivery of the new challenger",
        lambda: stack.registry_deliveries(ALIAS_CREATED, version),
        60,
    )
    bridge = f"{stack.airflow.base_url}/mlops-webhooks/mlflow"
    first, second = _replay(bridge, delivery), _replay(bridge, delivery)
    assert first.status_code == 201, first.text
    assert second.status_code == 401, second.text
    assert "already recorded" in second.json()["detail"]

    acting = stack.approve(version, timeout=RUN_TIMEOUT_S)
    run = stack.finish(DEPLOYMENT, acting, RUN_TIMEOUT_S)
    states = stack.states(DEPLOYMENT, acting)
    assert (run["state"], run["run_type"]) == ("success", "asset_triggered"), (
        states, {task: stack.task_log(DEPLOYMENT, acting, task)[-3000:]
                 for task, state in states.items() if state == "failed"},
    )  # fmt: skip
    time.sleep(QUIET_S)  # the watcher saw the candidate too, and found the webhook's claim

    # One asset event from the two deliveries and the watcher, one run, one release.
    delivery_id = delivery.headers.get("X-MLflow-Delivery-Id")
    events = stack.candidate_events()[events_before:]
    assert [e["extra"].get("delivery_id") for e in events] == [delivery_id], events
    assert [r["dag_run_id"] for r in _runs_since(stack, DEPLOYMENT, moved)] == [acting]
    assert len(stack.approval_requests(version)) == 1
    assert [e["decision"] for e in stack.ledger() if e["version"] == version] == ["promoted"]
    assert stack.aliases() == {"champion": version, "previous_champion": champion}


def test_a_canary_whose_replay_gets_no_answers_fails_closed(stack: Stack) -> None:
    aliases, traffic = stack.aliases(), stack.traffic()
    version = stack.prepare(compared_to=aliases["champion"])
    ledger = stack.ledger()
    stack.proxy.withhold = "/predict"  # the service takes the requests and never answers
    try:
        run_id = stack.trigger(DEPLOYMENT, {**FAST_RELEASE, "version": version})
        run = stack.finish(DEPLOYMENT, run_id, RUN_TIMEOUT_S)
    finally:
        stack.proxy.withhold = None

    states = stack.states(DEPLOYMENT, run_id)
    assert run["state"] == "failed", states
    assert states["canary"] == "success" and states["analyze_canary"] == "failed", states
    assert states["promote"] == "upstream_failed" and states["rollback"] == "success", states
    assert stack.proxy.withheld >= int(str(FAST_RELEASE["requests_per_round"]))
    # Traffic and aliases exactly as before; the candidate carries the reason.
    assert stack.aliases() == aliases
    assert stack.traffic() == traffic
    assert stack.tags(version)["mlops.deploy.status"] == "rejected"
    (entry,) = stack.ledger()[len(ledger) :]
    assert (entry["version"], entry["decision"]) == (version, "rejected")
    assert entry["analysis"]["passed"] is False
    assert "canary_requests" in entry["analysis"]["failed_checks"]


@dataclass
class KilledTraining:
    """A training run whose ``train`` task is killed (task process and step process) while its
    MLflow run is open. Started by the first test that needs it (:meth:`start`)."""

    stack: Stack
    run_id: str = ""
    partition: str = ""
    killed: dict[str, Any] = field(default_factory=dict)
    error: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        if self.run_id:
            return
        logical = datetime.now(UTC).replace(microsecond=0)
        self.partition = logical.strftime("%Y%m%dT%H%M%S")  # the DAG's partition key
        self.run_id = self.stack.trigger(
            TRAINING, {"rows": 8000, "seed": 11}, logical_date=logical.isoformat()
        )
        self.thread = threading.Thread(target=self._kill, daemon=True)
        self.thread.start()

    def _kill(self) -> None:
        try:
            _kill_train_mid_run(self.stack, self)
        except BaseException as err:
            self.error.append(err)


def _open_train_runs(stack: Stack, airflow_run_id: str, status: str = "RUNNING") -> list[Any]:
    experiment = stack.client.get_experiment_by_name(f"exp-{MODEL}")
    if experiment is None:
        return []
    return list(
        stack.client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`mlops.airflow_run_id` = '{airflow_run_id}' "
            f"and attributes.status = '{status}'",
        )
    )


def _kill_train_mid_run(stack: Stack, training: KilledTraining) -> None:
    """Wait for the open MLflow run of ``train``, then SIGKILL the task process and the step
    process it started (what a lost worker does to both)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        if opened := _open_train_runs(stack, training.run_id):
            break
        time.sleep(0.2)
    else:
        raise TimeoutError(f"train of {training.run_id} never opened an MLflow run")
    steps = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "train" in (p.info["cmdline"] or [])
        and training.partition in (p.info["cmdline"] or [])
        and any("mlops" in part for part in p.info["cmdline"] or [])
    ]
    assert len(steps) == 1, [p.info for p in steps]
    step = steps[0]
    task = step.parent()
    ti = stack.rest.task_instance(TRAINING, training.run_id, "train")
    training.killed = {
        "step_pid": step.pid,
        "task_pid": task.pid if task else None,
        "ti_pid": ti.get("pid"),
        "try_number": ti.get("try_number"),
        "mlflow_run": opened[0].info.run_id,
    }
    for process in (task, step):
        if process is not None:
            process.kill()


@pytest.fixture(scope="module")
def killed_training(stack: Stack) -> KilledTraining:
    return KilledTraining(stack)


def test_a_run_without_its_candidate_skips_at_once_and_says_why(
    stack: Stack, killed_training: KilledTraining
) -> None:
    run_id = stack.trigger(DEPLOYMENT, {"version": "999"})
    killed_training.start()  # the next test's training run starts meanwhile
    run = stack.finish(DEPLOYMENT, run_id, RUN_TIMEOUT_S)

    states = stack.states(DEPLOYMENT, run_id)
    assert set(states.values()) == {"skipped"}, states
    sensor = stack.rest.task_instance(DEPLOYMENT, run_id, "wait_for_candidate")
    assert (_time(sensor["end_date"]) - _time(sensor["start_date"])).total_seconds() < 30
    assert run["state"] == "success"
    log = stack.task_log(DEPLOYMENT, run_id, "wait_for_candidate")
    assert (
        f"soft_fail: checked once (no wait configured) for {MODEL} version 999 (READY, tag "
        "'mlops.deploy.status' absent) on MLflow connection 'mlflow_default'; last check: "
        "version 999 does not exist"
    ) in log, log[-3000:]


def test_a_killed_training_task_retries_into_one_run_and_one_version(
    stack: Stack, killed_training: KilledTraining
) -> None:
    killed_training.start()
    assert killed_training.thread is not None
    killed_training.thread.join(timeout=RUN_TIMEOUT_S)
    assert not killed_training.error, killed_training.error
    assert killed_training.killed, "the train task was not killed"
    run = stack.finish(TRAINING, killed_training.run_id, 2 * RUN_TIMEOUT_S)

    train = stack.rest.task_instance(TRAINING, killed_training.run_id, "train")
    assert run["state"] == "success", stack.states(TRAINING, killed_training.run_id)
    assert train["try_number"] == killed_training.killed["try_number"] + 1, train
    # One finished MLflow run for the partition, none left looking alive: the killed attempt's
    # run was resumed by the retry (it is the finished one) or marked KILLED.
    (finished,) = _open_train_runs(stack, killed_training.run_id, "FINISHED")
    assert _open_train_runs(stack, killed_training.run_id, "RUNNING") == []
    killed_run = stack.client.get_run(killed_training.killed["mlflow_run"])
    assert killed_run.info.run_id == finished.info.run_id or killed_run.info.status == "KILLED", (
        killed_training.killed,
        killed_run.info,
    )
    # One registered version from it.
    versions = stack.client.search_model_versions(f"name = '{MODEL}'")
    mine = [
        v for v in versions if (v.tags or {}).get("mlops.partition") == killed_training.partition
    ]
    assert len(mine) == 1, [(v.version, v.tags) for v in mine]
