"""The steps against a real MLflow server: what gets logged, registered and aliased, retries that
register nothing twice, and a failing gate that leaves the registry exactly as it was."""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from mlops_steps.cli import main as cli
from mlops_steps.common.columnar import plain_values
from mlops_steps.common.storage import Partition
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.settings import load_settings

ROWS = "10000"
FEATURE_NAMES = load_contract("churn").feature_names


def _step(verb: str, partition: str, *args: str) -> int:
    return cli.main([verb, "--partition", partition, *args])


def _result(partition: str, step: str) -> dict[str, Any]:
    path = Partition.of(load_settings().dataset_root, partition).result(step)
    return json.loads(path.read_text())


def _pipeline(
    partition: str,
    *,
    seed: str = "42",
    drift: str = "0",
    validate_args: tuple[str, ...] = (),
    **gate: str,
) -> list[int]:
    # Latency is not what these tests judge: a loaded 2-core machine measured 27-34 ms (> 25 ms).
    gate.setdefault("max_latency_ms", "1000")
    gate_args = [a for k, v in gate.items() for a in (f"--{k.replace('_', '-')}", v)]
    return [
        _step("ingest", partition, "--rows", ROWS, "--seed", seed, "--drift", drift),
        _step("validate", partition, *validate_args),
        _step("train", partition, "--seed", "42"),
        _step("evaluate", partition, "--bootstrap-resamples", "200"),
        _step("gate", partition, *gate_args),
        _step("register", partition),
    ]


def _registry_state(client: MlflowClient, name: str) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "versions": sorted(int(v.version) for v in versions),
        "aliases": dict(sorted(client.get_registered_model(name).aliases.items())),
    }


def test_pipeline_registers_one_challenger_with_lineage(tracking: str) -> None:
    settings = load_settings()
    assert _pipeline("p20261116") == [0] * 6
    client = MlflowClient(tracking)
    registered = _result("p20261116", "register")
    assert registered["version"] == "1" and registered["alias"] == "challenger"
    assert _registry_state(client, settings.model_name) == {
        "versions": [1],
        "aliases": {"challenger": "1"},
    }

    version = client.get_model_version(settings.model_name, "1")
    manifest = _result("p20261116", "train")
    assert version.run_id == manifest["run_id"]
    assert version.tags["mlops.gate.decision"] == "passed"
    assert version.tags["mlops.data_sha256"] == manifest["data_sha256"]
    assert float(version.tags["mlops.holdout_auc"]) > 0.8

    run = client.get_run(manifest["run_id"])
    assert run.data.tags["mlops.data_sha256"] == manifest["data_sha256"]
    assert run.data.tags["mlops.code_sha"]
    assert run.data.tags["mlops.gate.decision"] == "passed"
    for metric in ("valid_auc", "valid_accuracy", "valid_f1", "valid_log_loss", "holdout_auc",
                   "latency_p95_ms", "best_iteration"):  # fmt: skip
        assert metric in run.data.metrics, metric
    assert any(k.startswith("valid_auc__contract_type__") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/roc_curve.png",
        "plots/pr_curve.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
    }

    # The registered model serves raw rows (strings for categories) through MLflow's pyfunc.
    model = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@challenger")
    rows = plain_values(generate_churn(20, seed=1).loc[:, list(FEATURE_NAMES)])
    scores = model.predict(rows)
    assert len(scores) == 20 and ((scores > 0) & (scores < 1)).all()
    signature = model.metadata.get_input_schema().input_names()
    assert signature == list(FEATURE_NAMES)

    # Retry / re-run of the same logical date: same run, same version, nothing new.
    runs_before = len(client.search_runs([run.info.experiment_id]))
    assert _pipeline("p20261116") == [0] * 6
    assert _result("p20261116", "train")["reused"] is True
    assert _result("p20261116", "train")["run_id"] == manifest["run_id"]
    assert _result("p20261116", "register")["created"] is False
    assert len(client.search_runs([run.info.experiment_id])) == runs_before
    assert _registry_state(client, settings.model_name)["versions"] == [1]


def test_champion_comparison_and_a_failing_gate_that_changes_nothing(tracking: str) -> None:
    settings = load_settings()
    client = MlflowClient(tracking)
    assert _pipeline("first", seed="1") == [0] * 6
    client.set_registered_model_alias(settings.model_name, "champion", "1")  # as a deployment would

    assert _pipeline("second", seed="2") == [0] * 6
    evaluation = _result("second", "evaluate")
    assert evaluation["champion"]["version"] == "1"
    comparison = evaluation["comparison"]
    assert (
        comparison["auc_delta_ci_low"] <= comparison["auc_delta"] <= comparison["auc_delta_ci_high"]
    )
    gate = _result("second", "gate")
    assert "max_auc_drop_vs_champion" in {c["check"] for c in gate["checks"]}
    before = _registry_state(client, settings.model_name)
    assert before == {"versions": [1, 2], "aliases": {"champion": "1", "challenger": "2"}}

    # Drifted data judged by this run's own bar (AUC >= 0.9; it reaches about 0.84): the gate
    # refuses, the registry is untouched. (drift=1 also moves the churn rate 0.30 -> 0.45: the run
    # accepts that shift, to be gated.)
    codes = _pipeline(
        "drifted",
        seed="3",
        drift="1.0",
        validate_args=("--accept-shift", "true"),
        checks='[{"metric": "auc", "threshold": 0.9}]',
    )
    assert codes[:4] == [0, 0, 0, 0]
    assert codes[4] == 2, "gate must reject"
    assert codes[5] == 2, "register must refuse an ungated model"
    assert _registry_state(client, settings.model_name) == before
    gate = _result("drifted", "gate")
    assert gate["decision"] == "failed" and "min_auc" in gate["reason"]
    run = client.get_run(gate["run_id"])
    assert run.data.tags["mlops.gate.decision"] == "failed"
    assert not client.search_model_versions(f"run_id = '{gate['run_id']}'")


def test_reregistering_the_champion_does_not_make_it_challenger(tracking: str) -> None:
    settings = load_settings()
    client = MlflowClient(tracking)
    assert _pipeline("p1") == [0] * 6
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    client.delete_registered_model_alias(settings.model_name, "challenger")
    assert _step("register", "p1") == 0
    registered = _result("p1", "register")
    assert (registered["alias"], registered["created"]) == ("champion", False)
    assert _registry_state(client, settings.model_name)["aliases"] == {"champion": "1"}


def test_flipped_labels_are_refused_then_registered_only_for_review(
    tracking: str, tmp_path: Any
) -> None:
    """A label bug the hold-out cannot see: validate refuses the label shift; a run that accepts
    it reaches the gate, which finds the champion collapsed and asks for a review."""
    settings = load_settings()
    client = MlflowClient(tracking)
    assert _pipeline("first", seed="1") == [0] * 6
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    before = _registry_state(client, settings.model_name)

    flipped = generate_churn(int(ROWS), seed=3)
    flipped["churn"] = 1 - flipped["churn"]
    source = tmp_path / "flipped.csv"
    flipped.to_csv(source, index=False)
    assert _step("ingest", "flipped", "--source", str(source)) == 0
    assert _step("validate", "flipped") == 2  # LabelShiftRefused
    validation = _result("flipped", "validate")
    label = validation["shift"]["label"]
    assert validation["shift"]["refused"] is True and label["exceeded"] is True
    assert label["champion_rate"] < 0.35 and label["new_rate"] > 0.65
    assert _registry_state(client, settings.model_name) == before

    assert _step("validate", "flipped", "--accept-shift", "true") == 0
    assert _step("train", "flipped", "--seed", "42") == 0
    assert _step("evaluate", "flipped", "--bootstrap-resamples", "50") == 0
    assert _step("gate", "flipped", "--max-latency-ms", "1000") == 0
    gate = _result("flipped", "gate")
    champion = _result("flipped", "evaluate")["champion"]
    assert champion["training_auc"] > 0.8 and champion["auc"] < 0.2  # 0.87 -> 0.13 in the issue
    assert gate["decision"] == "needs_review" and all(c["passed"] for c in gate["checks"])
    assert gate["reason"].startswith("needs review: champion v1 collapsed on the new hold-out")
    assert client.get_run(gate["run_id"]).data.tags["mlops.gate.decision"] == "needs_review"

    assert _step("register", "flipped") == 0
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["mlops.gate.decision"] == "needs_review"
    assert tags["mlops.gate.reason"] == gate["reason"]
    assert tags["mlops.shift.accepted"] == "true" and tags["mlops.shift.compared_to"] == "1"
    assert float(tags["mlops.shift.label_shift"]) == pytest.approx(label["shift"], abs=1e-6)
    assert tags["mlops.shift.report"].endswith("partition=flipped/validation/shift.html")
    assert _registry_state(client, settings.model_name)["aliases"] == {
        "champion": "1",
        "challenger": "2",
    }
