"""``mlops-step contract infer|check`` and ``--model`` as a user runs them: the installed command
as a subprocess (stdout holds only the path), and main() in-process for the exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mlops_steps.cli import main as cli
from mlops_steps.contract.loader import load_contract

MLOPS_STEP = Path(sys.executable).with_name("mlops-step")
CHURN = Path(__file__).resolve().parents[3] / "models" / "churn.yaml"


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(directory))
    monkeypatch.delenv("MLOPS_MODEL_NAME", raising=False)
    return directory


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLOPS_STEP), *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def test_infer_then_check_with_the_installed_command(tmp_path: Path, models: Path) -> None:
    source = tmp_path / "cancer.csv.gz"
    load_breast_cancer(as_frame=True).frame.to_csv(source, index=False)
    args = ("contract", "infer", "--source", str(source), "--label", "target")
    done = _run(*args, "--task", "binary", "--name", "cancer")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{models / 'cancer.yaml'}\n"  # only the path: scripts capture it
    assert "positive_class is 1" in done.stderr
    assert "airflow dags trigger mlops_training__cancer" in done.stderr
    contract = load_contract("cancer")
    assert (contract.task, len(contract.features), contract.source) == ("binary", 30, str(source))

    again = _run(*args, "--task", "binary", "--name", "cancer")
    assert again.returncode == 2 and again.stdout == ""
    assert "cancer.yaml: exists already" in again.stderr and "--force" in again.stderr

    checked = _run("contract", "check", "cancer")
    assert checked.returncode == 0, checked.stderr
    out = checked.stdout
    assert f"{models / 'cancer.yaml'}: valid" in out
    assert "features  30: 0 integer, 30 float, 0 category, 0 boolean; 0 nullable" in out
    assert "the score is P(target == 1)" in out
    assert "gate      auc >= 0.7, at most 0.01 worse than the champion" in out
    for dag in ("training", "deployment", "monitoring", "rollback"):
        assert f"  mlops_{dag}__cancer: " in out
    assert "mlops://cancer/training-data | mlops://cancer/drift-detected" in out
    assert "line(s) still say DECIDE" in checked.stderr
    assert "MLOPS_RESULT" not in out


def test_check_describes_churn_as_configured(
    models: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (models / "churn.yaml").write_text(CHURN.read_text())
    monkeypatch.setenv("MLOPS_TRAINING_SCHEDULE", "off")
    assert cli.main(["contract", "check", "churn"]) == 0
    out = capsys.readouterr().out
    assert "classes   0, 1; the score is P(churn == 1)" in out
    assert "features  16: 3 integer, 3 float, 10 category, 0 boolean" in out
    assert "auc >= 0.75, at most 0.01 worse than the champion; accuracy >= 0.7" in out
    assert "slices    contract_type, internet_service" in out
    assert "mlops_training__churn: no cron, and on mlops://churn/training-data" in out
    assert "mlops_monitoring__churn: cron '15 * * * *'" in out


def test_wine_parquet_and_diabetes_csv_round_trip(tmp_path: Path, models: Path) -> None:
    wine, diabetes = tmp_path / "wine.parquet", tmp_path / "diabetes.csv"
    load_wine(as_frame=True).frame.to_parquet(wine)
    load_diabetes(as_frame=True).frame.to_csv(diabetes, index=False)
    for source, task, name in ((wine, "multiclass", "wine"), (diabetes, "regression", "diab")):
        argv = ["contract", "infer", "--source", f"file://{source}", "--label", "target"]
        assert cli.main([*argv, "--task", task, "--model", name]) == 0
        assert cli.main(["--model", name, "contract", "check"]) == 0
        assert load_contract(name).task == task
    assert load_contract("wine").classes == (0, 1, 2)


def test_nulls_and_strings_from_a_csv(
    tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    frame["site"] = ["left", "right", "yes", None] * 142 + ["left"]
    frame.loc[::9, "mean radius"] = None
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    source = tmp_path / "cancer.csv"
    frame.to_csv(source, index=False)
    argv = ["contract", "infer", "--source", str(source), "--label", "target", "--task", "binary"]
    assert cli.main([*argv, "--name", "cancer_named", "--sample-rows", "200"]) == 0
    assert capsys.readouterr().out == f"{models / 'cancer_named.yaml'}\n"
    contract = load_contract("cancer_named")
    site = contract.features_by_name["site"]
    assert (site.kind, site.nullable, site.categories) == (
        "category",
        True,
        ("left", "right", "yes"),
    )
    assert contract.features_by_name["mean radius"].nullable
    # Neither word is a yes-like token: the later one in sorted order, for a person to check.
    assert contract.classes == ("benign", "malignant")
    assert "200 of 569 rows" in (contract.path.read_text() if contract.path else "")
    assert cli.main(["contract", "check", "cancer_named"]) == 0
    assert "2 nullable" in capsys.readouterr().out


def test_model_option_wins_over_the_environment(
    models: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (models / "churn.yaml").write_text(CHURN.read_text())
    monkeypatch.setenv("MLOPS_MODEL_NAME", "iris")
    assert cli.main(["contract", "check"]) == 2  # the environment's model has no contract
    assert cli.main(["--model", "churn", "contract", "check"]) == 0
    assert "model     churn:" in capsys.readouterr().out
    assert os.environ["MLOPS_MODEL_NAME"] == "iris"  # restored after the verb
    assert cli.model_option(["train", "--partition", "p", "--model", "wine"]) == "wine"
    assert cli.model_option(["--model-version", "3", "resolve"]) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "iris", "ingest", "--partition", "p1"],
        ["ingest", "--partition", "p1", "--model", "iris"],
    ],
)
def test_a_step_for_an_unknown_model_stops_before_it_runs(
    models: Path, mlops_env: Path, argv: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main(argv) == 2
    assert "no contract for model 'iris'" in caplog.text
    assert "Fix: write one with `mlops-step contract infer --name iris" in caplog.text
    assert not (mlops_env / "data" / "iris").exists()


def test_a_broken_contract_stops_every_verb_with_its_key(
    models: Path, mlops_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = CHURN.read_text().replace("primary: auc", "primary: rmse")
    (models / "churn.yaml").write_text(text)
    assert cli.main(["contract", "check", "churn"]) == 2
    assert cli.main(["ingest", "--partition", "p1"]) == 2
    assert caplog.text.count("churn.yaml: metrics.primary: 'rmse' is not a binary metric") == 2


def test_infer_refuses_what_it_cannot_draft(tmp_path: Path, models: Path) -> None:
    source = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(source, index=False)
    done = _run(
        "contract", "infer", "--source", str(source), "--label", "target", "--task", "binary"
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "names no model" in done.stderr  # no --name, no --model, no MLOPS_MODEL_NAME
    done = _run(
        "contract", "infer", "--source", str(source), "--label", "target", "--task", "binary",
        env={"MLOPS_MODEL_NAME": "wine"},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert "--label target: has 3 distinct values" in done.stderr
    assert "Fix: use --task multiclass" in done.stderr
    assert list(models.iterdir()) == []
    missing = _run(
        "contract", "infer", "--source", str(tmp_path / "nope.csv"), "--label", "y",
        "--task", "binary", "--name", "nope",
    )  # fmt: skip
    assert missing.returncode == 2 and "no such file" in missing.stderr
