"""Alert channels against loopback receivers: the exact Slack, SMTP and webhook requests, the JSON
lines file, one record per channel, failures isolated and secrets kept out of logs and errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_provider.notifications.alerts import Alert, task_alert
from mlops_provider.notifications.callbacks import deadline_missed
from mlops_provider.notifications.delivery import deliver
from mlops_provider.notifications.notifier import MlopsNotifier
from tests.alert_receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_receiver

SLACK_PATH = "/services/T0001/B0001/s3cretSlackPath"
WEBHOOK_TOKEN = "webhook-t0ken-value"
SMTP_PASSWORD = "smtp-pa55word"
SECRETS = (SLACK_PATH, "s3cretSlackPath", WEBHOOK_TOKEN, SMTP_PASSWORD)
RUN_ID = "manual__2026-11-16T00:00:00+00:00"
LOG_URL = "http://airflow.test/dags/d/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00/tasks/t"
#: The SMTP provider's switches for a plain-text relay (the loopback receiver speaks no TLS).
PLAIN = {"disable_ssl": True, "disable_tls": True}


@pytest.fixture
def alerts_env(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test")
    monkeypatch.setenv("MLOPS_ALERT_TIMEOUT_S", "3")
    yield mlops_env / "alerts" / "alerts.jsonl"


@pytest.fixture
def receivers(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[HttpReceiver, SmtpReceiver, HttpReceiver]]:
    with (
        http_receiver() as slack,
        smtp_receiver(("alerts", SMTP_PASSWORD)) as smtp,
        http_receiver() as hook,
    ):
        _connections(monkeypatch, slack, smtp, hook)
        yield slack, smtp, hook


def _connections(
    monkeypatch: pytest.MonkeyPatch, slack: HttpReceiver, smtp: SmtpReceiver, hook: HttpReceiver
) -> None:
    conns = {
        "SLACK_ALERTS": {"conn_type": "generic", "password": slack.url + SLACK_PATH},
        "SMTP_ALERTS": {
            "conn_type": "smtp",
            "host": smtp.host,
            "port": smtp.port,
            "login": "alerts",
            "password": SMTP_PASSWORD,
            "extra": {
                "to": "oncall@example.com, ml@example.com",
                **PLAIN,
                "from_email": "airflow@example.com",
            },
        },
        "ALERTS_WEBHOOK": {
            "conn_type": "http",
            "host": hook.url + "/hook",
            "password": WEBHOOK_TOKEN,
        },
    }
    for name, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))


def _conn(monkeypatch: pytest.MonkeyPatch, name: str, **conn: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))


def _channels(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from mlops_steps.core.settings import get_settings

    monkeypatch.setenv("MLOPS_ALERT_CHANNELS", value)
    get_settings.cache_clear()


def _alert() -> Alert:
    return Alert(
        kind="task_failed",
        dag_id="mlops_training",
        run_id=RUN_ID,
        task_id="train",
        try_number=3,
        log_url=LOG_URL,
        message="train failed on try 3: AirflowException: step 'train' failed with exit code 1",
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_default_channel_is_the_jsonl_file_and_the_log(
    alerts_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alert = _alert()
    with caplog.at_level(logging.INFO, logger="mlops_provider.notifications"):
        assert deliver(alert) == {"file": "sent"}
    (record,) = _lines(alerts_env)
    assert record == {
        "alert_id": alert.alert_id,
        "kind": "task_failed",
        "dag_id": "mlops_training",
        "task_id": "train",
        "run_id": RUN_ID,
        "try": 3,
        "log_url": LOG_URL,
        "message": alert.message,
        "time": alert.time,
        "details": {},
    }
    assert f"ALERT {json.dumps(record)}" in caplog.text


def test_every_channel_gets_exactly_one_record(
    receivers: tuple[HttpReceiver, SmtpReceiver, HttpReceiver],
    alerts_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack, smtp, hook = receivers
    _channels(monkeypatch, "file,slack,email,webhook")
    alert = _alert()
    with caplog.at_level(logging.DEBUG):
        results = deliver(alert)
    assert results == {"file": "sent", "slack": "sent", "email": "sent", "webhook": "sent"}
    assert len(_lines(alerts_env)) == 1

    (slack_request,) = slack.requests
    assert slack_request.method == "POST" and slack_request.path == SLACK_PATH
    assert slack_request.headers["Content-Type"].startswith("application/json")
    text = slack_request.json()["text"]
    assert set(slack_request.json()) == {"text"}
    assert text.startswith(":red_circle: *Task failed: mlops_training.train*\n")
    assert f"DAG `mlops_training` · run `{RUN_ID}` · task `train` (try 3)" in text
    assert f"<{LOG_URL}|Open in Airflow>" in text
    assert "exit code 1" in text

    (mail,) = smtp.mails
    assert mail.auth == ("alerts", SMTP_PASSWORD)
    assert mail.mail_from == "airflow@example.com"
    assert mail.rcpt_to == ["oncall@example.com", "ml@example.com"]
    message = mail.message()
    assert message["Subject"] == "[airflow-mlops] Task failed: mlops_training.train"
    assert message["To"] == "oncall@example.com, ml@example.com"
    assert message["X-Mlops-Alert-Id"] == alert.alert_id
    (part,) = [p for p in message.walk() if p.get_content_type() == "text/html"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode()
    assert f"Log: {LOG_URL}" in body and f"Run: {RUN_ID}" in body and "Task: train (try 3)" in body
    assert smtp.commands[:2] == ["EHLO", "AUTH"]  # no STARTTLS: the connection switched it off

    (hook_request,) = hook.requests
    assert hook_request.path == "/hook"
    assert hook_request.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert hook_request.headers["X-Mlops-Alert-Id"] == alert.alert_id
    assert hook_request.json() == alert.record()

    _no_secrets(caplog.text, alerts_env.read_text(), json.dumps(results))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_failing_channel_does_not_stop_the_others(
    receivers: tuple[HttpReceiver, SmtpReceiver, HttpReceiver],
    alerts_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack, smtp, hook = receivers
    slack.status, slack.reply = 500, b"rollup_error"
    port = _closed_port()
    _conn(
        monkeypatch,
        "SMTP_ALERTS",
        conn_type="smtp",
        host="127.0.0.1",
        port=port,
        login="alerts",
        password=SMTP_PASSWORD,
        extra={"to": "oncall@example.com"},
    )
    _channels(monkeypatch, "slack,email,webhook,file")
    with caplog.at_level(logging.DEBUG):
        results = deliver(_alert())
    assert results["slack"] == (
        f"failed: slack (connection 'slack_alerts'): HTTP 500 from 127.0.0.1:"
        f"{slack.url.rsplit(':', 1)[1]}: rollup_error"
    )
    assert results["email"].startswith(
        f"failed: email via 127.0.0.1:{port} (connection 'smtp_alerts') failed: "
        "ConnectionRefusedError"
    )
    assert results["webhook"] == results["file"] == "sent"
    assert len(slack.requests) == len(hook.requests) == 1 and not smtp.mails
    assert len(_lines(alerts_env)) == 1
    assert "channel 'slack' failed" in caplog.text and "channel 'email' failed" in caplog.text
    _no_secrets(caplog.text, json.dumps(results))


@pytest.mark.parametrize(
    ("conn", "error"),
    [
        (None, "slack: Airflow connection 'slack_alerts' is not defined; create it (e.g. "
               "AIRFLOW_CONN_SLACK_ALERTS="),
        ({"conn_type": "generic"}, "connection 'slack_alerts' has no webhook URL; put the "
                                   "incoming-webhook URL"),
    ],
)  # fmt: skip
def test_slack_connection_errors_name_the_connection_and_the_fix(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch, conn: Any, error: str
) -> None:
    if conn is not None:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps(conn))
    results = deliver(_alert(), ["slack", "file"])
    assert error in results["slack"]
    assert results["file"] == "sent"


def test_revoked_slack_webhook_says_how_to_fix_it(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with http_receiver() as slack:
        slack.status, slack.reply = 404, b"no_service"
        _conn(monkeypatch, "SLACK_ALERTS", conn_type="generic", password=slack.url + SLACK_PATH)
        with caplog.at_level(logging.DEBUG):
            results = deliver(_alert(), ["slack"])
    assert "HTTP 404" in results["slack"] and "no_service" in results["slack"]
    assert "wrong or revoked: create a new incoming webhook" in results["slack"]
    _no_secrets(caplog.text, json.dumps(results))


def test_slack_provider_style_connection_host_plus_token(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with http_receiver() as slack:
        _conn(
            monkeypatch,
            "SLACK_ALERTS",
            conn_type="slackwebhook",
            host=slack.url + "/services",
            password="T0001/B0001/s3cretSlackPath",
        )
        assert deliver(_alert(), ["slack"]) == {"slack": "sent"}
    assert slack.requests[0].path == SLACK_PATH


def test_email_insists_on_tls_unless_switched_off(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_receiver() as smtp:
        _conn(
            monkeypatch,
            "SMTP_ALERTS",
            conn_type="smtp",
            host=smtp.host,
            port=smtp.port,
            login="alerts",
            password=SMTP_PASSWORD,
            extra={"to": "oncall@example.com", "disable_ssl": True},
        )
        results = deliver(_alert(), ["email"])
    assert f"asks for STARTTLS but 127.0.0.1:{smtp.port} does not offer it" in results["email"]
    assert '"disable_tls": true only for a trusted local relay' in results["email"]
    assert smtp.mails == [] and "AUTH" not in smtp.commands  # no password over plain text


@pytest.mark.parametrize(
    ("extra", "login", "error"),
    [
        ({**PLAIN}, "alerts", 'has no recipients: set its extra "to"'),
        ({**PLAIN, "to": "a@example.com"}, None, 'has no sender: set its extra'),
        ({**PLAIN, "to": "a@example.com"}, "intruder", "was refused by 127.0.0.1:"),
    ],
)  # fmt: skip
def test_email_connection_errors(
    alerts_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, Any],
    login: str | None,
    error: str,
) -> None:
    with smtp_receiver(("alerts", SMTP_PASSWORD)) as smtp:
        _conn(
            monkeypatch,
            "SMTP_ALERTS",
            conn_type="smtp",
            host=smtp.host,
            port=smtp.port,
            login=login,
            password=SMTP_PASSWORD,
            extra=extra,
        )
        results = deliver(_alert(), ["email"])
    assert error in results["email"] and "connection 'smtp_alerts'" in results["email"]
    assert smtp.mails == []
    _no_secrets(results["email"])


def test_unknown_channel_is_a_config_error_naming_the_variable(
    alerts_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.core.settings import ConfigError, load_settings

    monkeypatch.setenv("MLOPS_ALERT_CHANNELS", "file,pager")
    with pytest.raises(ConfigError, match=r"MLOPS_ALERT_CHANNELS='file,pager': 'pager' is not"):
        load_settings()
    _channels(monkeypatch, "file,pager")
    results = deliver(_alert())
    assert list(results) == ["config"] and "MLOPS_ALERT_CHANNELS" in results["config"]


def _task_context(task_id: str, error: BaseException | None = None, **task: Any) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="mlops_deployment",
        task_id=task_id,
        run_id=RUN_ID,
        map_index=-1,
        try_number=1,
        log_url=f"http://airflow.test/dags/mlops_deployment/runs/x/tasks/{task_id}?try_number=1",
    )
    task_ = SimpleNamespace(task_id=task_id, **task)
    return {"ti": ti, "task_instance": ti, "run_id": RUN_ID, "exception": error, "task": task_}


def test_one_notifier_instance_renders_each_call_on_its_own(alerts_env: Path) -> None:
    """default_args share one instance between all tasks of a DAG."""
    notifier = MlopsNotifier(kind="task_failed", message="{{ ti.task_id }} broke")
    notifier(_task_context("canary", RuntimeError("x")))
    notifier(_task_context("promote", RuntimeError("y")))
    first, second = _lines(alerts_env)
    assert (first["message"], second["message"]) == ("canary broke", "promote broke")
    assert notifier.message == "{{ ti.task_id }} broke"


def test_failure_alert_from_a_task_context(alerts_env: Path) -> None:
    MlopsNotifier(kind="task_failed")(_task_context("canary", RuntimeError("pods\nnot ready")))
    (record,) = _lines(alerts_env)
    assert record["message"] == "canary failed on try 1: RuntimeError: pods"
    assert record["log_url"].endswith("/tasks/canary?try_number=1")
    assert record["details"] == {"error": "RuntimeError: pods"}


def test_approval_alert_links_the_required_actions_page(alerts_env: Path) -> None:
    from datetime import timedelta

    context = _task_context(
        "approve", subject="Deploy churn v7 to production?", response_timeout=timedelta(hours=24)
    )
    alert = task_alert(context, "approval_waiting")
    link = (
        "http://airflow.test/dags/mlops_deployment/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00"
        "/tasks/approve/required_actions"
    )
    assert alert.details == {"required_actions_url": link, "response_timeout": "1 day, 0:00:00"}
    assert alert.message == (
        f"Deploy churn v7 to production? Answer at {link} within 1 day, 0:00:00 "
        "(then the default answer applies)."
    )


def _deadline_context(end_date: str | None, state: str) -> dict[str, Any]:
    return {
        "dag_run": {
            "dag_id": "mlops_deployment",
            "dag_run_id": RUN_ID,
            "state": state,
            "queued_at": "2026-11-16T00:00:00Z",
            "end_date": end_date,
        },
        "deadline": {"id": "d1", "deadline_time": "2026-11-16T04:25:00+00:00"},
    }


def test_deadline_callback_alerts_a_run_that_is_still_going(alerts_env: Path) -> None:
    output = asyncio.run(
        deadline_missed(
            deadline="approval_overdue",
            message="Answer the approval.",
            action_task_id="approve",
            context=_deadline_context(None, "running"),
        )
    )
    (record,) = _lines(alerts_env)
    assert output == f"deadline approval_overdue: alert {record['alert_id']}: file=sent"
    assert record["kind"] == "deadline_missed" and record["task_id"] is None
    assert record["message"] == (
        f"mlops_deployment run {RUN_ID} did not finish within 4:25:00 of being queued "
        "(state: running). Answer the approval."
    )
    assert record["details"]["required_actions_url"].endswith("/tasks/approve/required_actions")
    assert record["log_url"] == (
        "http://airflow.test/dags/mlops_deployment/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00"
    )


def test_deadline_callback_is_silent_for_a_run_that_ended_before_it(alerts_env: Path) -> None:
    """Airflow keeps a failed run's deadlines; the failure alert already went out."""
    output = asyncio.run(
        deadline_missed(deadline="x", context=_deadline_context("2026-11-16T01:00:00Z", "failed"))
    )
    assert output == "deadline x: no alert, the run ended before its deadline"
    assert _lines(alerts_env) == []
