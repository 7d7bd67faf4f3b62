"""The progressive walk (release/progressive.py) over an in-memory deploy target: the order of
positions, a ledger line per judged step, the stop at the first failure, and the refusals of a
shadow phase that could not be judged. The real target and analysis run end to end in
tests/e2e/test_deployment_dag.py (shadow, 10 %, 50 %, then promotion, on a real service)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy
from mlops_steps.core.settings import Settings, load_settings
from mlops_steps.release import progressive
from mlops_steps.release.analysis import CanaryFailed
from mlops_steps.release.ledger import deployment_dir, read_ledger
from mlops_steps.release.targets.base import Release, TrafficState

RELEASE = Release("churn", "7", "ghcr.io/airflow-mlops/serving:v7-abc")


class MemoryTarget:
    """A deploy target that keeps the traffic in memory and records every move."""

    def __init__(self, stable: str | None) -> None:
        self.traffic = TrafficState(stable, None, 0.0)
        self.moves: list[tuple[str, float]] = []

    def state(self) -> TrafficState:
        return self.traffic

    def start_canary(self, release: Release, weight: float) -> TrafficState:
        self.moves.append(("canary", weight))
        self.traffic = TrafficState(self.traffic.stable_version, release.version, weight)
        return self.traffic

    def start_shadow(self, release: Release, share: float) -> TrafficState:
        self.moves.append(("shadow", share))
        self.traffic = TrafficState(self.traffic.stable_version, release.version, 0.0, share)
        return self.traffic


@pytest.fixture
def settings(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MLOPS_AIRFLOW_RUN_ID", "manual__walk")
    monkeypatch.setenv("MLOPS_AIRFLOW_TRY_NUMBER", "1")
    return load_settings()


def _walk(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    target: MemoryTarget,
    canary: CanaryPolicy,
    failing: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Run the canary and analyze steps; the analysis fails the named results."""
    judged: list[str] = []

    def analysis(_s: Settings, version: str, _p: str, _a: Any, *, phase: str,
                 result_name: str) -> dict[str, Any]:  # fmt: skip
        judged.append(f"{result_name}@{target.traffic.canary_weight}/{target.traffic.shadow_share}")
        result = {"version": version, "phase": phase, "passed": result_name not in failing,
                  "failed_checks": ["canary_accuracy"] if result_name in failing else [],
                  "failed_rounds": 2 if result_name in failing else 0, "rounds_completed": 3,
                  "golden_set": {"source": "champion_holdout"}, "task": "binary"}  # fmt: skip
        path = deployment_dir(settings, version) / f"{result_name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        if result_name in failing:
            raise CanaryFailed("failed 2 of 3 canary rounds", subject=f"canary v{version}")
        return result

    monkeypatch.setattr(progressive, "open_target", lambda _settings: target)
    monkeypatch.setattr(progressive, "run_analysis", analysis)
    progressive.run_start(settings, RELEASE, canary)
    progressive.run_progressive(settings, RELEASE, "p-candidate", AnalysisPolicy(), canary)
    return judged


def test_every_step_below_100_is_judged_in_order_with_a_ledger_line(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    target = MemoryTarget(stable="6")
    judged = _walk(monkeypatch, settings, target, CanaryPolicy())
    assert target.moves == [("canary", 0.05), ("canary", 0.05), ("canary", 0.25), ("canary", 0.5)]
    assert judged == ["analysis-canary-1@0.05/0.0", "analysis-canary-2@0.25/0.0",
                      "analysis-canary-3@0.5/0.0"]  # fmt: skip
    steps = read_ledger(settings, "traffic_step")
    assert [(s["step"], s["share"], s["passed"], s["dag_run_id"]) for s in steps] == [
        (1, 0.05, True, "manual__walk"), (2, 0.25, True, "manual__walk"),
        (3, 0.5, True, "manual__walk"),
    ]  # fmt: skip
    assert read_ledger(settings) == []  # no decision yet: the promotion writes it
    summary = json.loads((deployment_dir(settings, "7") / "analysis.json").read_text())
    assert summary["passed"] is True and summary["steps_asked"] == "5,25,50,100"
    assert summary["golden_set"] == {"source": "champion_holdout"}


def test_the_first_failed_step_stops_the_walk_and_names_itself(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    target = MemoryTarget(stable="6")
    with pytest.raises(CanaryFailed, match=r"failed at step 2 of 3 \(25% of traffic\)"):
        _walk(monkeypatch, settings, target, CanaryPolicy(), failing={"analysis-canary-2"})
    assert target.moves[-1] == ("canary", 0.25)  # never reached 50 %
    steps = read_ledger(settings, "traffic_step")
    assert [(s["step"], s["passed"]) for s in steps] == [(1, True), (2, False)]
    assert steps[1]["failed_checks"] == ["canary_accuracy"]
    assert "failed 2 of 3 canary rounds" in steps[1]["reason"]
    summary = json.loads((deployment_dir(settings, "7") / "analysis.json").read_text())
    assert summary["passed"] is False and summary["failed_checks"] == ["canary_accuracy"]


def test_a_shadow_phase_comes_first_and_answers_nobody(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    target = MemoryTarget(stable="6")
    judged = _walk(monkeypatch, settings, target, CanaryPolicy(steps="20,100", shadow_share=0.5))
    assert target.moves == [("shadow", 0.5), ("shadow", 0.5), ("canary", 0.2)]
    assert judged == ["analysis-shadow-1@0.0/0.5", "analysis-canary-2@0.2/0.0"]
    labels = [s["label"] for s in read_ledger(settings, "traffic_step")]
    assert labels == ["shadow of 50% of requests", "20% of traffic"]


def test_a_first_release_takes_all_traffic_and_is_judged_once(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    target = MemoryTarget(stable=None)
    judged = _walk(monkeypatch, settings, target, CanaryPolicy())
    assert target.moves == [("canary", 1.0), ("canary", 1.0)]
    assert judged == ["analysis-first-1@1.0/0.0"]


def test_a_shadow_that_could_not_be_judged_is_refused_before_anything_moves(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    shadow = CanaryPolicy(shadow_share=0.3)
    first = MemoryTarget(stable=None)
    with pytest.raises(StepError, match="no stable version to shadow"):
        _walk(monkeypatch, settings, first, shadow)
    kubernetes = dataclasses.replace(
        settings, deploy=dataclasses.replace(settings.deploy, target="kubernetes")
    )
    cluster = MemoryTarget(stable="6")
    with pytest.raises(StepError, match="cannot be judged in shadow on the kubernetes target"):
        _walk(monkeypatch, kubernetes, cluster, shadow)
    assert first.moves == cluster.moves == []
    # Asked of the analyze step alone (after a canary started without one): refused, not ignored.
    live = MemoryTarget(stable=None)
    live.start_canary(RELEASE, 1.0)
    monkeypatch.setattr(progressive, "open_target", lambda _settings: live)
    with pytest.raises(StepError, match="no stable version to shadow"):
        progressive.run_progressive(settings, RELEASE, "p-candidate", AnalysisPolicy(), shadow)
    assert live.moves == [("canary", 1.0)]
