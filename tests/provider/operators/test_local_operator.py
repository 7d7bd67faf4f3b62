"""LocalStepOperator: streams the step's output, returns its result, and maps exit codes to
Airflow's retry semantics (2 = rejected input, never retried; anything else = retryable)."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlops_provider.operators.local import LocalStepOperator


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "step"
    path.write_text("#!/usr/bin/env python3\nimport sys, time\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _operator(command: str) -> LocalStepOperator:
    return LocalStepOperator(task_id="t", cmds=[command], arguments=["verb"], env_vars={})


def test_result_line_becomes_the_return_value(tmp_path: Path) -> None:
    op = _operator(_script(tmp_path, "print('working')\nprint('MLOPS_RESULT {\"ok\": 1}')\n"))
    assert op.execute(context={}) == {"ok": 1}


def test_exit_2_fails_without_retry(tmp_path: Path) -> None:
    op = _operator(_script(tmp_path, "sys.exit(2)\n"))
    with pytest.raises(AirflowFailException, match="Not retried"):
        op.execute(context={})


def test_other_exit_codes_are_retryable_failures(tmp_path: Path) -> None:
    op = _operator(_script(tmp_path, "sys.exit(1)\n"))
    with pytest.raises(AirflowException, match="exit code 1") as info:
        op.execute(context={})
    assert not isinstance(info.value, AirflowFailException)


def test_on_kill_stops_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    op = _operator(_script(tmp_path, f"open({str(marker)!r}, 'w').close()\ntime.sleep(300)\n"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context={})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    op.on_kill()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors and "exit code -15" in str(errors[0])


def test_secrets_come_from_the_worker_env_else_the_named_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    op = LocalStepOperator(
        task_id="t",
        cmds=["true"],
        arguments=["verb"],
        env_vars={},
        secret_env=["MLOPS_CI_TOKEN", "SERVING_ADMIN_TOKEN", "AWS_ACCESS_KEY_ID"],
        secret_connections={
            "MLOPS_CI_TOKEN": ("ci_build", "password"),
            "SERVING_ADMIN_TOKEN": ("mlops_serving", "password"),
            "AWS_ACCESS_KEY_ID": ("aws_default", "login"),
        },
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CI_BUILD",
        json.dumps({"conn_type": "http", "host": "https://api.github.com", "password": "ci-x"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_SERVING", json.dumps({"conn_type": "http", "password": "from-conn"})
    )
    monkeypatch.setenv("SERVING_ADMIN_TOKEN", "from-worker-env")  # the worker's own env wins
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    env = op.process_environment()
    assert env["MLOPS_CI_TOKEN"] == "ci-x"
    assert env["SERVING_ADMIN_TOKEN"] == "from-worker-env"
    assert "AWS_ACCESS_KEY_ID" not in env  # no connection: optional, simply not set


def test_each_connection_is_read_once_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two secrets from one connection, two from an absent one: two lookups, not six (each one
    goes to the metadata database or a secrets backend)."""
    import json

    from airflow.sdk import BaseHook

    asked: list[str] = []
    real = BaseHook.get_connection.__func__  # type: ignore[attr-defined]

    def counting(cls: type[BaseHook], conn_id: str) -> object:
        asked.append(conn_id)
        return real(cls, conn_id)

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(counting))
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "http", "login": "user", "password": "secret"}),
    )
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    op = LocalStepOperator(
        task_id="t",
        cmds=["true"],
        arguments=["verb"],
        env_vars={},
        secret_connections={
            "MLFLOW_TRACKING_USERNAME": ("mlflow_default", "login"),
            "MLFLOW_TRACKING_PASSWORD": ("mlflow_default", "password"),
            "AWS_ACCESS_KEY_ID": ("aws_default", "login"),
            "AWS_SECRET_ACCESS_KEY": ("aws_default", "password"),
        },
    )
    env = op.process_environment()
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("user", "secret")
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert sorted(asked) == ["aws_default", "mlflow_default"]
