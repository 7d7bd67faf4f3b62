"""Shared by the alert tests: the settings every one of them runs with, the secrets no log may
show, and the alert records as the file channel wrote them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SLACK_PATH = "/services/T0001/B0001/s3cretSlackPath"
WEBHOOK_TOKEN = "webhook-t0ken-value"
SMTP_PASSWORD = "smtp-pa55word"
SECRETS = (SLACK_PATH, "s3cretSlackPath", WEBHOOK_TOKEN, SMTP_PASSWORD)
RUN_ID = "manual__2026-11-16T00:00:00+00:00"
#: The SMTP provider's switches for a plain-text relay (the loopback receiver speaks no TLS).
PLAIN = {"disable_ssl": True, "disable_tls": True}


@pytest.fixture
def alerts_env(mlops_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test")
    monkeypatch.setenv("MLOPS_ALERT_TIMEOUT_S", "3")
    yield mlops_env / "alerts" / "alerts.jsonl"


def alert_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
