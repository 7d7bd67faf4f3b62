"""The canary analysis driven end to end against a loopback stand-in of the service and a real
MLflow server (the champion it reads): it replays the champion's hold-out, not the candidate's
own labels; requests that got no answer fail the round; metrics without a version label stop it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlops_steps.common.storage import Partition, load_partition_frame
from mlops_steps.contract.loader import load_contract
from mlops_steps.core.policies import AnalysisPolicy, SourceRequest
from mlops_steps.core.settings import Settings, get_settings, load_settings
from mlops_steps.release.analysis import CanaryFailed, run_analysis
from mlops_steps.release.ledger import deployment_dir
from mlops_steps.training.ingest import run_ingest
from tests.steps.release.standin_service import Scorer, StandIn, serving

ROWS = 2000
CHURN = load_contract("churn")
ID_COLUMN, LABEL_COLUMN = str(CHURN.id_column), CHURN.label
CHAMPION, CANDIDATE = "champion-data", "flipped-data"
FAST: dict[str, Any] = {"requests_per_round": 200, "interval_s": 0.0, "min_canary_requests": 10}


@pytest.fixture
def release(tracking: str, tmp_path: Path) -> tuple[Settings, dict[str, Scorer]]:
    """Champion v1 trained on CHAMPION; candidate v2 on the same customers with flipped labels.
    Each "model" scores by the labels it learned (0.9 for churn, 0.1 otherwise)."""
    from mlops_steps.contract.synthetic import generate_churn

    settings = load_settings()
    run_ingest(settings, CHAMPION, SourceRequest(rows=ROWS, seed=1))
    flipped = generate_churn(ROWS, seed=1)
    flipped[LABEL_COLUMN] = 1 - flipped[LABEL_COLUMN]
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    run_ingest(settings, CANDIDATE, SourceRequest(uri=str(tmp_path / "flipped.csv")))
    client = MlflowClient(tracking)
    client.create_registered_model(settings.model_name)
    scorers: dict[str, Scorer] = {}
    for key in (CHAMPION, CANDIDATE):
        frame, manifest = load_partition_frame(Partition.of(settings.dataset_root, key))
        version = client.create_model_version(
            settings.model_name,
            source="s3://standin-bucket/model",  # never loaded: the stand-in scores
            tags={"mlops.partition": key, "mlops.data_sha256": manifest["data_sha256"]},
        )
        churned = set(frame.loc[frame[LABEL_COLUMN] == 1, ID_COLUMN].astype(str))
        scorers[str(version.version)] = _scorer(churned)
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    return settings, scorers


def _scorer(churned: set[str]) -> Scorer:
    def score(customer: str) -> float:
        return 0.9 if customer in churned else 0.1

    return score


def _analyze(
    monkeypatch: pytest.MonkeyPatch, standin: StandIn, policy: AnalysisPolicy
) -> tuple[dict | None, dict]:
    monkeypatch.setenv("MLOPS_SERVICE_URL", standin.url)
    monkeypatch.setenv("SERVING_ADMIN_TOKEN", "standin-token")
    get_settings.cache_clear()
    settings = load_settings()
    try:
        result: dict | None = run_analysis(settings, "2", CANDIDATE, policy)
    except CanaryFailed:
        result = None
    written = json.loads((deployment_dir(settings, "2") / "analysis.json").read_text())
    return result, written


def test_a_candidate_with_flipped_labels_fails_on_the_champions_holdout(
    release: tuple[Settings, dict[str, Scorer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, scorers = release
    # The score distributions differ too; PSI is allowed anything here so that accuracy alone
    # has to catch it (on its own labels the candidate scores 1.0 and the champion 0.0).
    policy = AnalysisPolicy(rounds=1, max_failed_rounds=1, max_psi=1000, **FAST)
    standin = StandIn(stable=("1", scorers["1"]), canary=("2", scorers["2"]), weight=0.5)
    with serving(standin):
        result, written = _analyze(monkeypatch, standin, policy)
    assert result is None and written["passed"] is False
    assert written["failed_checks"] == ["canary_accuracy"]
    assert written["golden_set"]["source"] == "champion_holdout"
    assert written["golden_set"]["partition"] == CHAMPION
    accuracy = written["rounds"][0]["variants"]
    assert accuracy["canary"]["accuracy"] == 0.0 and accuracy["stable"]["accuracy"] == 1.0


def test_a_healthy_canary_passes_every_round(
    release: tuple[Settings, dict[str, Scorer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, scorers = release
    policy = AnalysisPolicy(rounds=2, max_failed_rounds=1, **FAST)
    standin = StandIn(stable=("1", scorers["1"]), canary=("2", scorers["1"]), weight=0.5)
    with serving(standin):
        result, written = _analyze(monkeypatch, standin, policy)
    assert result is not None and result["passed"] is True, written
    assert (result["rounds_completed"], result["failed_rounds"]) == (2, 0)
    assert [r["client_errors"] for r in result["rounds"]] == [0, 0]


def test_requests_that_get_no_answer_fail_the_round(
    release: tuple[Settings, dict[str, Scorer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, scorers = release
    policy = AnalysisPolicy(rounds=1, max_failed_rounds=1, **FAST)
    standin = StandIn(
        stable=("1", scorers["1"]), canary=("2", scorers["1"]), weight=0.5, drop_every=20
    )
    with serving(standin):
        result, written = _analyze(monkeypatch, standin, policy)
    assert result is None and written["failed_checks"] == ["client_errors"]
    (only,) = written["rounds"]
    assert (only["requests_sent"], only["client_errors"]) == (200, 10)


def test_metrics_without_a_version_label_stop_the_analysis(
    release: tuple[Settings, dict[str, Scorer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, scorers = release
    standin = StandIn(
        stable=("1", scorers["1"]), canary=("2", scorers["1"]), weight=0.5, version_label=False
    )
    monkeypatch.setenv("SERVING_ADMIN_TOKEN", "standin-token")
    with serving(standin):
        monkeypatch.setenv("MLOPS_SERVICE_URL", standin.url)
        get_settings.cache_clear()
        with pytest.raises(CanaryFailed, match="no 'version' label"):
            run_analysis(load_settings(), "2", CANDIDATE, AnalysisPolicy(**FAST))
