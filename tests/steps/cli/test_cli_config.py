from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_steps.cli import main as cli
from mlops_steps.core import results
from mlops_steps.core.settings import ConfigError, load_settings


def test_runner_and_numbers_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_RUNNER", "kubernetes")
    assert load_settings().runner == "kubernetes"
    monkeypatch.setenv("MLOPS_RUNNER", "docker")
    with pytest.raises(ConfigError, match="MLOPS_RUNNER='docker'"):
        load_settings()
    monkeypatch.delenv("MLOPS_RUNNER")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_RUNNER", "kubernetes")
    assert load_settings().runner == "kubernetes"
    monkeypatch.setenv("MLOPS_GATE_MAX_LATENCY_MS", "high")
    with pytest.raises(ConfigError, match="MLOPS_GATE_MAX_LATENCY_MS"):
        load_settings()


def test_every_setting_can_be_an_airflow_variable_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_TASK_IMAGE", "registry.example.com/task:1.2.3")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_GATE_MAX_LATENCY_MS", "0.9")
    monkeypatch.setenv("MLOPS_GATE_MAX_LATENCY_MS", "0.85")  # MLOPS_* wins over the Variable
    settings = load_settings()
    assert settings.kubernetes.task_image == "registry.example.com/task:1.2.3"
    assert settings.gate.max_latency_ms == 0.85
    monkeypatch.delenv("MLOPS_GATE_MAX_LATENCY_MS")
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_GATE_MAX_LATENCY_MS", "high")
    with pytest.raises(ConfigError, match="AIRFLOW_VAR_MLOPS_GATE_MAX_LATENCY_MS='high'"):
        load_settings()


def test_schedules_are_cron_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().schedules.training == "0 4 * * 1"
    monkeypatch.setenv("MLOPS_TRAINING_SCHEDULE", "off")
    monkeypatch.setenv("MLOPS_MONITORING_SCHEDULE", "*/5 * * * *")
    schedules = load_settings().schedules
    assert (schedules.training, schedules.monitoring) == (None, "*/5 * * * *")
    monkeypatch.setenv("MLOPS_DEPLOYMENT_RECONCILE_SCHEDULE", "every hour")
    with pytest.raises(
        ConfigError, match=r"MLOPS_DEPLOYMENT_RECONCILE_SCHEDULE='every hour'.*'off'"
    ):
        load_settings()


def test_the_registry_watcher_polls_within_bounds_and_the_waiting_runs_are_a_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deploy = load_settings().deploy
    assert (deploy.registry_poll_interval_s, deploy.waiting_runs_fallback) == (20.0, False)
    monkeypatch.setenv("MLOPS_REGISTRY_POLL_INTERVAL_S", "45")
    monkeypatch.setenv("MLOPS_DEPLOYMENT_WAITING_FALLBACK", "true")
    deploy = load_settings().deploy
    assert (deploy.registry_poll_interval_s, deploy.waiting_runs_fallback) == (45.0, True)
    for outside in ("0", "3600"):
        monkeypatch.setenv("MLOPS_REGISTRY_POLL_INTERVAL_S", outside)
        with pytest.raises(
            ConfigError, match=r"MLOPS_REGISTRY_POLL_INTERVAL_S=.* outside 1\.\.300"
        ):
            load_settings()
    monkeypatch.delenv("MLOPS_REGISTRY_POLL_INTERVAL_S")
    monkeypatch.setenv("MLOPS_DEPLOYMENT_WAITING_FALLBACK", "yes")
    with pytest.raises(ConfigError, match="MLOPS_DEPLOYMENT_WAITING_FALLBACK='yes'"):
        load_settings()


def test_step_result_is_the_last_stdout_line(
    mlops_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["ingest", "--partition", "p1", "--rows", "1500", "--seed", "3"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(results.RESULT_MARKER)
    assert json.loads(last[len(results.RESULT_MARKER) :])["summary"]["rows"] == 1500


def test_result_also_goes_to_the_kubernetes_xcom_file(
    mlops_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "KUBERNETES_XCOM_DIR", tmp_path)
    assert cli.main(["ingest", "--partition", "p2", "--rows", "1000"]) == 0
    assert json.loads((tmp_path / "return.json").read_text())["partition"] == "p2"


def test_rejected_input_exits_2_with_a_named_error(
    mlops_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert cli.main(["validate", "--partition", "never-ingested"]) == 2
    assert "run the 'ingest' step" in caplog.text


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["ingest", "--partition", "p", "--rows", "many"], "--rows"),
        (["ingest", "--partition", "p", "--drift", "2"], "--drift"),
        (["gate", "--partition", "p", "--min-auc", "-1"], "--min-auc"),
        (["train"], "--partition"),
    ],
)
def test_bad_flags_are_named(argv: list[str], flag: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "mlops_steps", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert flag in completed.stderr


def test_unreachable_mlflow_is_named(
    mlops_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert cli.main(["ingest", "--partition", "p3", "--rows", "1000"]) == 0
    assert cli.main(["train", "--partition", "p3"]) == 2
    assert f"{uri}: MLflow server is unreachable" in caplog.text


def test_missing_tracking_uri_is_named(
    mlops_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["ingest", "--partition", "p4", "--rows", "1000"]) == 0
    assert cli.main(["train", "--partition", "p4"]) == 2
    assert "MLFLOW_TRACKING_URI: is not set" in caplog.text


def test_results_are_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    """XComs travel through Airflow's API server as strict JSON: no NaN or infinity."""
    results.emit_result({"psi": float("nan"), "rounds": [{"p99": float("inf"), "ok": 1.5}]})
    line = capsys.readouterr().out.strip()
    assert json.loads(line[len(results.RESULT_MARKER) :]) == {
        "psi": None,
        "rounds": [{"p99": None, "ok": 1.5}],
    }
    assert "NaN" not in line and "Infinity" not in line
