"""The audit ledger under concurrent release attempts (real processes released together at a
barrier for each decision): one whole line per model, version and decision, never a duplicate
and never a torn line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_steps.core.settings import load_settings
from mlops_steps.release.ledger import PROMOTED, read_ledger, record_decision
from tests.steps.release.ledger_support import Registry, race

ATTEMPTS, DECISIONS = 6, 25


def _attempt(attempt: int, start: Any) -> None:
    settings, registry = load_settings(), Registry()
    for version in range(DECISIONS):
        start.wait()
        record_decision(
            settings,
            registry,
            version=str(version),
            status=PROMOTED,
            reason="x" * 20_000,  # long lines: several pages each
            extra={"attempt": attempt},
        )


def test_overlapping_attempts_record_each_decision_once(mlops_env: Path) -> None:
    race(_attempt, ATTEMPTS)

    settings = load_settings()
    lines = settings.ledger_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # a torn line would not parse
    assert sorted(int(e["version"]) for e in entries) == list(range(DECISIONS))
    assert {(e["decision"], e["model_name"], len(e["reason"])) for e in entries} == {
        (PROMOTED, settings.model_name, 20_000)
    }
    assert read_ledger(settings) == entries


def test_append_once_is_keyed_by_model_version_and_decision(tmp_path: Path) -> None:
    from mlops_steps.release.ledger import append_once

    ledger = tmp_path / "ledger.jsonl"
    entry = {"model_name": "churn", "version": "3", "decision": PROMOTED, "run": "a"}
    assert append_once(ledger, entry) is True
    assert append_once(ledger, {**entry, "run": "b"}) is False
    assert append_once(ledger, {**entry, "decision": "rolled_back"}) is True
    assert [json.loads(line)["decision"] for line in ledger.read_text().splitlines()] == [
        PROMOTED,
        "rolled_back",
    ]
