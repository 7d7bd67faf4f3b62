"""The deployment DAG end to end through dag.test(): a real MLflow server, a real model service
(uvicorn) on loopback, the release steps as real child processes, and approvals answered through
Airflow's own REST API.

Three trained versions are made once per module by the real training steps: v1 and v2 on fresh
data (good), v3 on data whose labels were flipped (a label bug: the model looks excellent on its
own hold-out). validate refuses the flipped partition's label shift; only a run that accepts the
shift registers v3, and the gate marks it ``needs_review`` (the champion collapsed on its
hold-out), so no deployment approves it automatically. Each test copies them into a model of its
own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_steps.cli import main as cli
from mlops_steps.contract.loader import MODELS_DIR_ENV
from tests import airflow_api
from tests.dags.helpers import for_dag_test, load_dags
from tests.fixtures.contracts import churn_contracts
from tests.pipeline import train_and_register
from tests.service_process import Service

pytestmark = pytest.mark.e2e
TEMPLATE = "deploy_template"
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
ROWS = 8000
# Per-row latency is gated elsewhere; a busy machine must not stop these models at the gate.
RELAXED_LATENCY = ["--max-latency-ms", "500"]
FAST_ANALYSIS = {
    "analysis_rounds": 2,
    "requests_per_round": 400,
    "round_interval_s": 0,
    "canary_steps": "50,100",
}


@dataclass(frozen=True)
class Template:
    home: Path  # MLOPS_HOME holding the template's partitions
    refused: dict[str, Any]  # the flipped partition's first validate: exit code, result, registry


@pytest.fixture(scope="module")
def template(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    from mlops_steps.contract.synthetic import generate_churn

    home = tmp_path_factory.mktemp("deploy-template")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_MODEL_NAME", TEMPLATE)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{TEMPLATE}")
        env.setenv(MODELS_DIR_ENV, str(churn_contracts(home / "models", TEMPLATE)))
        train_and_register("good1", "--seed", "1", rows=ROWS, gate_args=RELAXED_LATENCY)
        MlflowClient(mlflow_server).set_registered_model_alias(TEMPLATE, "champion", "1")
        train_and_register("good2", "--seed", "2", rows=ROWS, gate_args=RELAXED_LATENCY)
        flipped = generate_churn(ROWS, seed=3)
        flipped["churn"] = 1 - flipped["churn"]
        source = home / "flipped.csv"
        flipped.to_csv(source, index=False)
        # As the pipeline runs it: validate refuses the label shift and nothing is registered.
        assert cli.main(["ingest", "--partition", "flipped", "--source", str(source)]) == 0
        refused = {
            "exit_code": cli.main(["validate", "--partition", "flipped"]),
            "validate": json.loads(
                (home / "data" / TEMPLATE / "partition=flipped" / "results" / "validate.json")
                .read_text()
            ),
            "versions": sorted(
                v.version for v in MlflowClient(mlflow_server).search_model_versions(
                    f"name = '{TEMPLATE}'"
                )
            ),
        }  # fmt: skip
        # A run that says it means to learn the new distribution: registered, for review only.
        train_and_register(
            "flipped",
            "--source",
            str(source),
            rows=ROWS,
            gate_args=RELAXED_LATENCY,
            validate_args=["--accept-shift", "true"],
        )
    yield Template(home, refused)


@dataclass
class Deployment:
    dag: Any
    rollback_dag: Any
    client: MlflowClient
    name: str
    service: Service
    home: Path

    def aliases(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).aliases)

    def traffic(self) -> dict[str, Any]:
        return httpx.get(f"{self.service.url}/ready", timeout=10).json()

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)

    def result(self, version: str, name: str) -> dict[str, Any]:
        """A release step's result file (release/ledger.py)."""
        from mlops_steps.core.settings import load_settings
        from mlops_steps.release.ledger import analysis_result

        found = analysis_result(load_settings(), version, name)
        assert found is not None, f"v{version} has no {name}.json"
        return found

    def ledger(self, kind: str = "decision") -> list[dict[str, Any]]:
        from mlops_steps.core.settings import load_settings
        from mlops_steps.release.ledger import read_ledger

        return read_ledger(load_settings(), kind)


@pytest.fixture
def deployment(  # noqa: PLR0917
    template: Template,
    mlflow_server: str,
    airflow_db: Path,
    service_starter: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Deployment:
    """A model of this test's own: v1 champion (serving), v2 good, v3 flipped; no challenger."""
    from mlops_steps.core.settings import get_settings

    client = MlflowClient(mlflow_server)
    name = "deploy_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    home = tmp_path / "mlops"
    for number in ("1", "2", "3"):
        source = client.get_model_version(TEMPLATE, number)
        copy = client.copy_model_version(f"models:/{TEMPLATE}/{number}", name)
        assert copy.version == number
        for key, value in source.tags.items():
            client.set_model_version_tag(name, number, key, value)
        partition = f"partition={source.tags['mlops.partition']}"
        shutil.copytree(
            template.home / "data" / TEMPLATE / partition, home / "data" / name / partition
        )
    client.set_registered_model_alias(name, "champion", "1")

    service = service_starter(
        mlflow_server,
        model_name=name,
        admin_token=ADMIN_TOKEN,
        SERVING_MODEL_STORE=str(home / "model-store" / name),
    )
    for key, value in {
        "MLOPS_HOME": str(home),
        "MLOPS_MODEL_NAME": name,
        # The test's model is the only one: its DAGs are built from churn's contract.
        MODELS_DIR_ENV: str(churn_contracts(tmp_path / "models", name)),
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_server,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "SERVING_ADMIN_TOKEN": ADMIN_TOKEN,
        "MLOPS_SERVICE_URL": service.url,
        "MLOPS_CANDIDATE_WAIT_S": "20",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    get_settings.cache_clear()
    dags = load_dags(monkeypatch, "local")
    monkeypatch.delenv("MLOPS_RUNNER")
    deploy, rollback = (
        for_dag_test(dags[f"mlops_{kind}__{name}"]) for kind in ("deployment", "rollback")
    )
    return Deployment(deploy, rollback, client, name, service, home)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _challenge(deployment: Deployment, version: str) -> None:
    """Move ``challenger`` to ``version``: what the webhook or the registry watcher turns into a
    deployment run (the run's first task checks the candidate once)."""
    deployment.client.set_registered_model_alias(deployment.name, "challenger", version)


def test_approved_candidate_is_promoted_once_and_can_be_rolled_back(
    deployment: Deployment,
) -> None:
    _challenge(deployment, "2")
    approver, outcome = airflow_api.answer_in_background(deployment.dag.dag_id, "Approve")
    stepped = {**FAST_ANALYSIS, "canary_steps": "10,50,100", "shadow_share": 0.5}
    run = deployment.dag.test(run_conf=stepped)
    approver.join(timeout=30)
    ((request, response),) = outcome
    assert "v2" in request["subject"] and "AUC" in request["body"]
    assert "in steps of 10,50,100 % of the" in request["body"]
    assert "after a shadow phase on\n50.0 % of the requests" in request["body"]
    assert response["responded_by"]["name"] == airflow_api.APPROVER
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["reject"] == "skipped" and states["rollback"] == "skipped", states
    assert states["release_rolled_back"] == "skipped"

    assert deployment.aliases() == {"champion": "2", "previous_champion": "1"}
    traffic = deployment.traffic()
    assert (traffic["stable"], traffic["canary"], traffic["canary_weight"]) == ("2", None, 0.0)
    info = httpx.get(f"{deployment.service.url}/model/info", timeout=10).json()
    assert info["stable"]["version"] == "2" and info["stable"]["bundle"].startswith("v2-")
    tags = deployment.tags("2")
    assert tags["mlops.deploy.status"] == "promoted"
    assert tags["mlops.deploy.approved_by"] == airflow_api.APPROVER
    assert tags["mlops.image.ref"].endswith(f":{info['stable']['bundle']}")
    (entry,) = deployment.ledger()
    assert entry["decision"] == "promoted" and entry["version"] == "2"
    assert entry["approved_by"] == airflow_api.APPROVER
    assert entry["previous_champion"] == "1" and entry["dag_run_id"] == run.run_id
    assert entry["data_sha256"] == tags["mlops.data_sha256"]
    assert entry["analysis"]["passed"] is True
    assert entry["analysis"]["golden_set"]["source"] == "champion_holdout"
    # The shadow phase, then every traffic step below 100 %, judged in order, each with its
    # ledger line; the shadow answered nobody (canary weight 0) and agreed with the champion.
    steps = deployment.ledger(kind="traffic_step")
    assert [(s["phase"], s["step"], s["share"], s["passed"]) for s in steps] == [
        ("shadow", 1, 0.5, True), ("canary", 2, 0.1, True), ("canary", 3, 0.5, True)
    ]  # fmt: skip
    assert [(s["traffic"]["canary_weight"], s["traffic"]["shadow_share"]) for s in steps] == [
        (0.0, 0.5), (0.1, 0.0), (0.5, 0.0)
    ]  # fmt: skip
    assert {s["dag_run_id"] for s in steps} == {run.run_id}
    assert [s["label"] for s in entry["analysis"]["steps"]] == [
        "shadow of 50% of requests", "10% of traffic", "50% of traffic"
    ]  # fmt: skip
    shadow = deployment.result("2", "analysis-shadow-1")
    agreement = shadow["rounds"][-1]["agreement"]
    assert agreement["compared"] >= 200 and agreement["rate"] >= 0.8, agreement

    # The same event again (a duplicate webhook, the reconciliation tick): nothing is deployed.
    again = deployment.dag.test(run_conf=FAST_ANALYSIS)
    assert set(_states(again).values()) == {"skipped"}, _states(again)
    assert len(deployment.ledger()) == 1
    assert deployment.aliases() == {"champion": "2", "previous_champion": "1"}

    # The manual rollback DAG restores the previous champion, aliases and traffic.
    restored = deployment.rollback_dag.test(run_conf={"reason": "e2e: bad news from users"})
    assert str(restored.state) == "success", _states(restored)
    assert deployment.aliases() == {"champion": "1"}
    assert deployment.traffic()["stable"] == "1"
    assert deployment.tags("2")["mlops.deploy.status"] == "rolled_back"
    assert [e["decision"] for e in deployment.ledger()] == ["promoted", "rolled_back"]


def test_a_candidate_needing_review_is_never_auto_approved(deployment: Deployment) -> None:
    _challenge(deployment, "3")
    before = deployment.traffic()
    run = deployment.dag.test(run_conf={**FAST_ANALYSIS, "require_approval": False})
    states = _states(run)
    assert str(run.state) == "failed", states
    assert (states["wait_for_candidate"], states["resolve"]) == ("success", "success"), states
    assert states["approve"] == "failed", states
    released = ("build_image", "canary", "analyze_canary", "promote", "reject")
    assert {states[t] for t in released} == {"upstream_failed"}, states
    # Nothing was released, so there is nothing to roll back (and no "rollback failed" alert).
    assert (states["rollback"], states["release_rolled_back"]) == ("skipped", "skipped"), states

    assert deployment.aliases() == {"champion": "1", "challenger": "3"}
    assert deployment.traffic() == before
    assert not (deployment.home / "model-store").exists()  # nothing was even built
    assert deployment.ledger() == []
    assert "mlops.deploy.status" not in deployment.tags("3")  # still open for a person


def test_a_reviewed_candidate_the_canary_rejects_is_rolled_back(deployment: Deployment) -> None:
    """A person approves v3 despite the review banner; the canary still catches it."""
    _challenge(deployment, "3")
    approver, outcome = airflow_api.answer_in_background(deployment.dag.dag_id, "Approve")
    run = deployment.dag.test(run_conf=FAST_ANALYSIS)
    approver.join(timeout=30)
    ((request, _response),) = outcome
    # The page opens with the reason (red no-entry sign: the UI renders Markdown without HTML).
    assert request["subject"].startswith("\u26d4 NEEDS REVIEW: Deploy")
    lines = request["body"].splitlines()
    assert lines[0] == "## \u26d4 NEEDS REVIEW"
    assert lines[2].startswith("**champion v1 collapsed on the new hold-out: AUC 0.")
    assert "Data vs the champion's training data: vs champion v1: label rate 0.3" in request["body"]
    assert "accepted by the run" in request["body"]
    assert "partition=flipped/validation/shift.html" in request["body"]

    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["approve"] == "success" and states["reject"] == "skipped", states
    assert states["analyze_canary"] == "failed" and states["rollback"] == "success", states
    assert states["promote"] == "upstream_failed"
    assert states["release_rolled_back"] == "failed"  # the run shows the release did not happen

    assert deployment.aliases() == {"champion": "1", "challenger": "3"}
    traffic = deployment.traffic()
    assert (traffic["stable"], traffic["canary"], traffic["canary_weight"]) == ("1", None, 0.0)
    tags = deployment.tags("3")
    assert tags["mlops.deploy.status"] == "rejected"
    (entry,) = deployment.ledger()
    assert entry["decision"] == "rejected" and entry["version"] == "3"
    assert entry["analysis"]["passed"] is False and entry["analysis"]["failed_checks"]
    # Judged on the champion's hold-out, not on its own flipped labels, so accuracy catches it,
    # at the first step: the walk stops there.
    assert "canary_accuracy" in entry["analysis"]["failed_checks"]
    (step,) = deployment.ledger(kind="traffic_step")
    assert (step["step"], step["share"], step["passed"]) == (1, 0.5, False)
    assert "canary_accuracy" in step["failed_checks"]
    golden = entry["analysis"]["golden_set"]
    assert (golden["source"], golden["partition"]) == (
        "champion_holdout",
        deployment.tags("1")["mlops.partition"],
    )
    assert entry["approved_by"] == airflow_api.APPROVER


def test_rejection_at_approval_changes_nothing(deployment: Deployment) -> None:
    _challenge(deployment, "2")
    before = deployment.traffic()
    approver, outcome = airflow_api.answer_in_background(deployment.dag.dag_id, "Reject")
    run = deployment.dag.test(run_conf=FAST_ANALYSIS)
    approver.join(timeout=30)
    assert len(outcome) == 1 and not isinstance(outcome[0], Exception), outcome
    states = _states(run)
    assert states["reject"] == "success", states
    assert {states[t] for t in ("build_image", "canary", "analyze_canary", "promote")} == {
        "skipped"
    }
    assert deployment.aliases() == {"champion": "1", "challenger": "2"}
    assert deployment.traffic() == before
    assert not (deployment.home / "model-store").exists()  # nothing was even built
    (entry,) = deployment.ledger()
    assert entry["decision"] == "rejected"
    assert entry["reason"] == f"rejected at approval by {airflow_api.APPROVER}"


def test_ungated_version_is_refused(deployment: Deployment) -> None:
    deployment.client.delete_model_version_tag(deployment.name, "2", "mlops.gate.decision")
    run = deployment.dag.test(run_conf={**FAST_ANALYSIS, "version": "2"})
    states = _states(run)
    assert states["resolve"] == "failed", states
    assert (states["rollback"], states["release_rolled_back"]) == ("skipped", "skipped"), states
    assert deployment.aliases() == {"champion": "1"}
    assert deployment.ledger() == []


def test_the_flipped_partition_is_refused_then_registered_only_for_review(
    template: Template, mlflow_server: str
) -> None:
    """The premises of the two tests above, as the training steps left them."""
    refused = template.refused
    assert refused["exit_code"] == 2  # LabelShiftRefused
    assert refused["versions"] == ["1", "2"]  # nothing registered
    label = refused["validate"]["shift"]["label"]
    assert label["champion_rate"] < 0.35 and label["new_rate"] > 0.65 and label["exceeded"]

    tags = MlflowClient(mlflow_server).get_model_version(TEMPLATE, "3").tags
    assert tags["mlops.gate.decision"] == "needs_review"
    assert tags["mlops.gate.reason"].startswith("needs review: champion v1 collapsed")
    assert tags["mlops.shift.accepted"] == "true" and tags["mlops.shift.compared_to"] == "1"
    frame = pd.read_parquet(
        template.home / "data" / TEMPLATE / "partition=flipped" / "data.parquet"
    )
    assert frame["churn"].mean() > 0.5  # flipped: most customers "churn"
