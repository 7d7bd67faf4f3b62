"""Alert channels against loopback receivers: the exact Slack, SMTP and webhook requests, the JSON
lines file, one record per channel, failures isolated and secrets kept out of logs and errors."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_provider.notifications.alerts import Alert
from mlops_provider.notifications.delivery import deliver
from tests.alert_receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_receiver
from tests.provider.notifications.conftest import (
    PLAIN,
    RUN_ID,
    SECRETS,
    SLACK_PATH,
    SMTP_PASSWORD,
    WEBHOOK_TOKEN,
    alert_records,
)

LOG_URL = "http://airflow.test/dags/d/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00/tasks/t"


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
        dag_id="mlops_training__churn",
        run_id=RUN_ID,
        task_id="train",
        try_number=3,
        log_url=LOG_URL,
        message="train failed on try 3: AirflowException: step 'train' failed with exit code 1",
    )


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
    (record,) = alert_records(alerts_env)
    assert record == {
        "alert_id": alert.alert_id,
        "kind": "task_failed",
        "dag_id": "mlops_training__churn",
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
    assert len(alert_records(alerts_env)) == 1

    (slack_request,) = slack.requests
    assert slack_request.method == "POST" and slack_request.path == SLACK_PATH
    assert slack_request.headers["Content-Type"].startswith("application/json")
    text = slack_request.json()["text"]
    assert set(slack_request.json()) == {"text"}
    assert text.startswith(":red_circle: *Task failed: mlops_training__churn.train*\n")
    assert f"DAG `mlops_training__churn` · run `{RUN_ID}` · task `train` (try 3)" in text
    assert f"<{LOG_URL}|Open in Airflow>" in text
    assert "exit code 1" in text

    (mail,) = smtp.mails
    assert mail.auth == ("alerts", SMTP_PASSWORD)
    assert mail.mail_from == "airflow@example.com"
    assert mail.rcpt_to == ["oncall@example.com", "ml@example.com"]
    message = mail.message()
    assert message["Subject"] == "[airflow-mlops] Task failed: mlops_training__churn.train"
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
    assert len(alert_records(alerts_env)) == 1
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
