"""No secret in any log, with every logger at DEBUG: Airflow's own (structlog, which the providers'
notifiers and hooks log through) as well as the standard library's, in a fresh process whose
output is everything that process printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.alert_receivers import http_receiver, smtp_receiver
from tests.provider.notifications.conftest import (
    PLAIN,
    SECRETS,
    SLACK_PATH,
    SMTP_PASSWORD,
    WEBHOOK_TOKEN,
)

REPO = Path(__file__).resolve().parents[3]


def test_debug_logs_of_a_delivery_show_no_secret(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import logging, sys
        from mlops_provider.notifications.alerts import Alert
        from mlops_provider.notifications.delivery import deliver

        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        alert = Alert(kind="task_failed", dag_id="d", run_id="r", message="m")
        print("RESULT", deliver(alert), flush=True)
    """)
    with http_receiver() as slack, http_receiver() as hook, smtp_receiver() as smtp:
        slack.status, slack.reply = 404, b"no_service"  # the error path logs the most
        conns = {
            "SLACK_ALERTS": {"conn_type": "slackwebhook", "password": slack.url + SLACK_PATH},
            "ALERTS_WEBHOOK": {"conn_type": "http", "host": hook.url, "password": WEBHOOK_TOKEN},
            "SMTP_ALERTS": {
                "conn_type": "smtp",
                "host": smtp.host,
                "port": smtp.port,
                "login": "alerts",
                "password": SMTP_PASSWORD,
                "extra": {"to": "oncall@example.com", **PLAIN},
            },
        }
        env = {
            **os.environ,
            **{f"AIRFLOW_CONN_{name}": json.dumps(conn) for name, conn in conns.items()},
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
            "MLOPS_HOME": str(tmp_path),
            "MLOPS_ALERT_CHANNELS": "slack,webhook,email,file",
        }
        completed = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
        )  # fmt: skip
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "'slack': \"failed: slack (connection 'slack_alerts'): HTTP 404" in output
    assert "'webhook': 'sent'" in output and "'email': 'sent'" in output
    assert "[debug" in output.lower() or "DEBUG" in output  # the loggers really were at DEBUG
    for secret in SECRETS:
        assert secret not in output
