"""A model retrained on served traffic is judged on two hold-outs: the recent labelled traffic
(where the drift is) and the champion's reference hold-out (what must not be forgotten).

Pure gate tests on evaluation dicts, then the real steps against a real MLflow server on a
served-style partition built by hand: drifted customers mixed with the champion's training rows,
its manifest naming the champion's partition as the reference."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from typing import Any

import jinja2
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_provider.pipelines.deployment import approval_body
from mlops_steps.cli import main as cli
from mlops_steps.common.metrics import split_frame
from mlops_steps.common.storage import (
    Partition,
    frame_sha256,
    load_partition_frame,
    write_json,
    write_parquet,
)
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import GateCheck, ModelContract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.core.policies import GateThresholds
from mlops_steps.core.settings import load_settings
from mlops_steps.release.deploy import run_resolve
from mlops_steps.training.gate import NO_REFERENCE_CHECK, evaluate_gate, review_reasons

CHURN = load_contract("churn")
REFERENCE_CHECK = "max_auc_relative_loss_on_reference"


# --- the gate's policy on both hold-outs (pure) ----------------------------------------------


def _scored(challenger: float, champion: float | None, metric: str = "auc") -> dict[str, Any]:
    scored: dict[str, Any] = {
        "rows": 1000,
        "challenger": {metric: challenger, "accuracy": 0.8},
        "champion": None,
        "comparison": None,
    }
    if champion is not None:
        scored["champion"] = {"version": "1", metric: champion, "accuracy": 0.8,
                              f"training_{metric}": champion}  # fmt: skip
        scored["comparison"] = {"metric": metric, f"{metric}_delta": challenger - champion}
    return scored


def _served(recent: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """An evaluation of a served partition: today's keys hold the recent hold-out."""
    return {
        "challenger": {**recent["challenger"], "latency_p95_ms": 5.0},
        "champion": recent["champion"],
        "comparison": recent["comparison"],
        "training_data": "served",
        "holdouts": {"recent": recent, "reference": {**reference, "partition": "ref"}},
    }


def _reference_check(
    evaluation: dict, thresholds: GateThresholds, contract: ModelContract = CHURN
) -> dict:
    (check,) = [c for c in evaluate_gate(evaluation, thresholds, contract) if c.get("holdout")]
    return check


def test_reference_check_allows_a_relative_loss_up_to_the_bound() -> None:
    recent = _scored(0.81, 0.70)
    # The champion's 0.87 on the reference hold-out: 3 % of it is 0.0261, so 0.8439 at least.
    within = _reference_check(_served(recent, _scored(0.845, 0.87)), GateThresholds())
    assert within["check"] == REFERENCE_CHECK and within["passed"] is True
    assert within["threshold"] == pytest.approx(0.87 * 0.97)
    assert (within["relation"], within["champion_auc"], within["rows"]) == (">=", 0.87, 1000)
    beyond = _reference_check(_served(recent, _scored(0.84, 0.87)), GateThresholds())
    assert beyond["passed"] is False
    # The bound is the policy's: with no loss tolerated, 0.845 fails; with 5 %, 0.84 passes.
    strict = GateThresholds(max_reference_relative_drop=0.0)
    assert _reference_check(_served(recent, _scored(0.845, 0.87)), strict)["passed"] is False
    loose = GateThresholds(max_reference_relative_drop=0.05)
    assert _reference_check(_served(recent, _scored(0.84, 0.87)), loose)["passed"] is True


def test_reference_check_only_adds_to_the_recent_checks() -> None:
    """The contract's checks judge the recent hold-out; a challenger that forgets fails on the
    reference check alone, and a partition from the source has no reference check at all."""
    evaluation = _served(_scored(0.81, 0.70), _scored(0.80, 0.87))
    checks = evaluate_gate(evaluation, GateThresholds(), CHURN)
    failed = {c["check"] for c in checks if not c["passed"]}
    assert failed == {REFERENCE_CHECK}
    recent_only = {c["check"] for c in checks if not c.get("holdout")}
    assert recent_only == {"min_auc", "min_accuracy", "max_latency_ms", "max_auc_drop_vs_champion"}
    source = {key: evaluation[key] for key in ("challenger", "champion", "comparison")}
    assert REFERENCE_CHECK not in {
        c["check"] for c in evaluate_gate(source, GateThresholds(), CHURN)
    }


def test_reference_check_on_a_loss_is_direction_aware() -> None:
    contract = dataclasses.replace(
        CHURN, primary_metric="log_loss", gate=(GateCheck("log_loss", False, threshold=1.0),)
    )
    assert contract.greater_is_better is False
    recent = _scored(0.45, 0.60, "log_loss")
    # Champion 0.40 on the reference hold-out: a rise up to 3 % (0.412) is tolerated.
    ok = _reference_check(
        _served(recent, _scored(0.41, 0.40, "log_loss")), GateThresholds(), contract
    )
    assert ok["check"] == "max_log_loss_relative_loss_on_reference"
    assert (ok["relation"], ok["passed"]) == ("<=", True)
    assert ok["threshold"] == pytest.approx(0.40 * 1.03)
    worse = _served(recent, _scored(0.42, 0.40, "log_loss"))
    assert _reference_check(worse, GateThresholds(), contract)["passed"] is False
    better = _served(recent, _scored(0.30, 0.40, "log_loss"))  # lower is better
    assert _reference_check(better, GateThresholds(), contract)["passed"] is True


def test_no_champion_no_reference_check() -> None:
    evaluation = _served(_scored(0.81, None), _scored(0.86, None))
    checks = evaluate_gate(evaluation, GateThresholds(), CHURN)
    assert not [c for c in checks if c.get("holdout")]
    assert review_reasons(evaluation, GateThresholds(), CHURN) == []
    assert "no champion" in NO_REFERENCE_CHECK


def test_collapse_is_judged_on_the_reference_hold_out() -> None:
    """On recent traffic the champion's drop is the drift being answered; on the reference
    hold-out (its own training data's) a collapse means the labels broke."""
    drifted = _scored(0.81, 0.55)  # the champion lost 0.32 on recent traffic (> 0.2)
    drifted["champion"]["training_auc"] = 0.87
    kept = _scored(0.86, 0.87)
    assert review_reasons(_served(drifted, kept), GateThresholds(), CHURN) == []
    # The same recent numbers from a source partition: the collapse asks for a review.
    source = {"challenger": drifted["challenger"], "champion": drifted["champion"]}
    (reason,) = review_reasons(source, GateThresholds(), CHURN)
    assert "collapsed on the new hold-out" in reason
    broken = _scored(0.86, 0.40)
    broken["champion"]["training_auc"] = 0.87
    (reason,) = review_reasons(_served(drifted, broken), GateThresholds(), CHURN)
    assert reason.startswith("champion v1 collapsed on the reference hold-out: AUC 0.87")
    assert "-> 0.40 now (a drop of 0.47 > max_champion_collapse 0.20)" in reason


# --- the real steps on a served-style partition -------------------------------------------

ROWS, DRIFTED_ROWS = 10_000, 6_000
DRIFT = 0.8  # the lifecycle demo's drifted customers (scripts/lifecycle_story.py)
#: Reference hold-out rows also in the served traffic (the same customers, served again): they
#: land in the served partition's hold-out and are left out of the recent one.
SHARED_HOLDOUT_ROWS = 50
WINDOW = {"start": "2026-11-09T00:00:00+00:00", "end": "2026-11-16T00:00:00+00:00"}


def _step(verb: str, partition: str, *args: str) -> int:
    return cli.main([verb, "--partition", partition, *args])


def _result(partition: str, step: str) -> dict[str, Any]:
    path = Partition.of(load_settings().dataset_root, partition).result(step)
    return json.loads(path.read_text())


def _served_partition(
    key: str, reference_key: str, reference_version: str, drifted_rows: int = DRIFTED_ROWS
) -> pd.DataFrame:
    """Drifted customers (their labels as the generator knows them) mixed with the reference
    partition's train/valid rows, written as ingest writes a served partition."""
    settings = load_settings()
    reference = Partition.of(settings.dataset_root, reference_key)
    reference_frame, reference_manifest = load_partition_frame(reference)
    splits = split_frame(reference_frame, "customer_id")
    remembered = pd.concat([splits.train, splits.valid]).sample(n=drifted_rows, random_state=0)
    shared = splits.holdout.head(SHARED_HOLDOUT_ROWS)
    drifted = generate_churn(drifted_rows, seed=9, drift=DRIFT)
    frame = pd.concat([drifted, remembered, shared], ignore_index=True)
    frame = frame.loc[:, list(reference_frame.columns)].astype(reference_frame.dtypes.to_dict())
    partition = Partition.of(settings.dataset_root, key)
    manifest = {
        "partition": key,
        "path": str(partition.data),
        "source": f"served://{settings.model_name}",
        "source_params": {},
        "columns_left_out": [],
        "data_sha256": frame_sha256(frame),
        "file_sha256": write_parquet(partition.data, frame),
        "ingested_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "served": {
            "window": WINDOW,
            "window_from": "drift event",
            "reference": {
                "model_version": reference_version,
                "partition": reference_key,
                "data_sha256": reference_manifest["data_sha256"],
                "rows": len(remembered) + len(shared),
                "share": 0.5,
            },
        },
    }
    write_json(partition.manifest, manifest)
    return drifted


def _evaluate_and_gate(partition: str, *gate_args: str) -> tuple[int, int]:
    return (
        _step("evaluate", partition, "--bootstrap-resamples", "200"),
        _step("gate", partition, "--max-latency-ms", "1000", *gate_args),
    )


def _render(body: str, candidate: dict[str, Any]) -> str:
    class TaskInstance:
        def xcom_pull(self, task_ids: str) -> dict[str, Any]:
            assert task_ids == "resolve"
            return candidate

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    params = {"canary_steps": "5,25,50,100", "shadow_share": 0.0}
    return environment.from_string(body).render(ti=TaskInstance(), params=params)


def test_retrained_on_served_traffic_judged_on_both_holdouts(tracking: str) -> None:
    settings = load_settings()
    client = MlflowClient(tracking)
    # v1 trained on the reference distribution; registered as a deployment would promote it.
    assert _step("ingest", "ref", "--rows", str(ROWS), "--seed", "1", "--drift", "0") == 0
    assert _step("validate", "ref") == 0 and _step("train", "ref", "--seed", "42") == 0
    assert _evaluate_and_gate("ref") == (0, 0) and _step("register", "ref") == 0
    reference_frame, _ = load_partition_frame(Partition.of(settings.dataset_root, "ref"))
    reference_holdout = split_frame(reference_frame, "customer_id").holdout

    drifted = _served_partition("served", "ref", "1")
    recent_rows = len(split_frame(drifted, "customer_id").holdout)
    assert _step("train", "served", "--seed", "42") == 0

    # No champion yet: both hold-outs are scored, nothing is compared, the report says why.
    assert _evaluate_and_gate("served") == (0, 0)
    evaluation = _result("served", "evaluate")
    assert evaluation["holdouts"]["reference"]["champion"] is None
    gate = _result("served", "gate")
    assert gate["holdouts"]["reference"]["not_checked"] == NO_REFERENCE_CHECK
    assert REFERENCE_CHECK not in {c["check"] for c in gate["checks"]}

    client.set_registered_model_alias(settings.model_name, "champion", "1")
    assert _evaluate_and_gate("served") == (0, 0)
    evaluation = _result("served", "evaluate")
    recent, reference = evaluation["holdouts"]["recent"], evaluation["holdouts"]["reference"]
    assert recent["rows"] == evaluation["holdout_rows"] == recent_rows
    assert recent["rows_from_reference_excluded"] == SHARED_HOLDOUT_ROWS
    assert reference["rows"] == len(reference_holdout)
    assert (reference["partition"], reference["model_version"]) == ("ref", "1")
    assert evaluation["comparison"] == recent["comparison"]
    for scored in (recent, reference):
        assert scored["champion"]["version"] == "1"
        comparison = scored["comparison"]
        assert comparison["bootstrap_resamples"] == 200
        low, delta, high = (comparison[f"auc_delta{k}"] for k in ("_ci_low", "", "_ci_high"))
        assert low <= delta <= high
        assert delta == pytest.approx(scored["challenger"]["auc"] - scored["champion"]["auc"])
    # The drift changed the concept: v1 cannot rank the drifted customers, the retrained
    # model can, by a margin the interval clears.
    assert recent["comparison"]["auc_delta_ci_low"] > 0.02
    # The champion scores on the reference hold-out what it scored when it was trained there.
    training_auc = reference["champion"]["training_auc"]
    assert reference["champion"]["auc"] == pytest.approx(training_auc, abs=1e-6)

    gate = _result("served", "gate")
    (check,) = [c for c in gate["checks"] if c["check"] == REFERENCE_CHECK]
    champion_auc = reference["champion"]["auc"]
    assert check["threshold"] == pytest.approx(champion_auc * (1 - 0.03))
    assert check["passed"] == (reference["challenger"]["auc"] >= check["threshold"])
    assert check["passed"], "the retrained model forgot the reference world"
    assert gate["decision"] == "passed", gate["reason"]
    assert gate["holdouts"]["reference"]["checks"] == [REFERENCE_CHECK]

    run = client.get_run(evaluation["run_id"])
    for name in ("recent_holdout_auc", "reference_holdout_auc", "recent_auc_delta_ci_low",
                 "reference_auc_delta_ci_high", "reference_champion_holdout_auc"):  # fmt: skip
        assert name in run.data.metrics, name
    assert run.data.metrics["reference_holdout_rows"] == len(reference_holdout)

    # No loss tolerated on the reference hold-out: the gate refuses exactly when v2 is worse.
    assert _step(
        "gate", "served", "--max-latency-ms", "1000", "--max-reference-relative-drop", "0"
    ) == (0 if reference["comparison"]["auc_delta"] >= 0 else 2)
    assert _evaluate_and_gate("served") == (0, 0)  # the policy's bound again

    # The drifted customers are a shift from v1's training data, accepted by this run.
    assert _step("validate", "served", "--accept-shift", "true") == 0
    assert _step("register", "served") == 0
    tags = client.get_model_version(settings.model_name, "2").tags
    assert tags["mlops.training_data"] == "served"
    assert tags["mlops.served_window"] == f"{WINDOW['start']}/{WINDOW['end']}"
    assert int(tags["mlops.recent_holdout_rows"]) == recent_rows
    assert float(tags["mlops.reference_holdout_auc"]) == pytest.approx(
        reference["challenger"]["auc"], abs=1e-6
    )
    assert float(tags["mlops.reference_auc_delta"]) == pytest.approx(
        reference["comparison"]["auc_delta"], abs=1e-6
    )
    assert client.get_model_version(settings.model_name, "1").tags["mlops.training_data"] == (
        "source"
    )

    # The approval page shows both hold-outs, challenger against champion, with the interval.
    candidate = run_resolve(settings, None)
    holdouts = candidate["holdouts"]
    assert holdouts["recent"]["rows"] == recent_rows
    assert holdouts["reference"]["partition"] == "ref"
    assert holdouts["reference"]["ci_low"] == pytest.approx(
        reference["comparison"]["auc_delta_ci_low"], abs=1e-6
    )
    assert candidate["metrics"]["reference_holdout_auc"] == pytest.approx(
        reference["challenger"]["auc"], abs=1e-6
    )
    page = _render(approval_body(load_contract(settings.model_name)), candidate)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in page.splitlines()}
    recent_line = rows["recent traffic (where the drift is)"]
    assert f"| {recent_rows} | {recent['challenger']['auc']:.4f} | " in recent_line
    assert f"{recent['champion']['auc']:.4f} | {recent['comparison']['auc_delta']:+.4f} " in (
        recent_line
    )
    assert f"[{recent['comparison']['auc_delta_ci_low']:+.4f}, " in recent_line
    reference_line = rows["reference: partition ref (must not forget)"]
    assert f"| {len(reference_holdout)} | {reference['challenger']['auc']:.4f} | " in (
        reference_line
    )
    assert f"{reference['comparison']['auc_delta_ci_high']:+.4f}] |" in reference_line


def test_a_reference_that_is_not_what_the_partition_was_built_against_fails_closed(
    tracking: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings()
    assert _step("ingest", "ref", "--rows", "3000", "--seed", "1", "--drift", "0") == 0
    _served_partition("served", "ref", "1", drifted_rows=2000)
    assert _step("train", "served", "--seed", "42") == 0
    manifest_path = Partition.of(settings.dataset_root, "served").manifest
    manifest = json.loads(manifest_path.read_text())

    def refused(reference: dict[str, Any]) -> str:
        changed = copy.deepcopy(manifest)
        changed["served"]["reference"] = reference
        write_json(manifest_path, changed)
        caplog.clear()
        assert _step("evaluate", "served", "--bootstrap-resamples", "50") == 2
        return caplog.text

    recorded = manifest["served"]["reference"]
    assert f"holds data {recorded['data_sha256'][:12]}, not the 000000000000" in refused(
        {**recorded, "data_sha256": "0" * 64}
    )
    assert "the reference partition 'gone' cannot be read" in refused(
        {**recorded, "partition": "gone"}
    )
    assert "served.reference names no partition" in refused(
        {k: v for k, v in recorded.items() if k != "partition"}
    )
    assert not Partition.of(settings.dataset_root, "served").result("evaluate").exists()
    write_json(manifest_path, manifest)
    assert _step("evaluate", "served", "--bootstrap-resamples", "50") == 0
