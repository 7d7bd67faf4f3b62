"""What the ledger's concurrency tests share: a registry stand-in for ``record_decision`` and
real processes released together at a barrier."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any


class Registry:
    """The two registry calls record_decision makes (the ledger is what is under test)."""

    def get_model_version(self, name: str, version: str) -> Any:
        return SimpleNamespace(tags={"mlops.data_sha256": f"sha-{version}"})

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        pass


def race(attempt: Callable[[int, Any], None], attempts: int, timeout: float = 300) -> None:
    """Run ``attempt(number, barrier)`` in ``attempts`` forked processes; each must exit 0."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(attempts)
    processes = [ctx.Process(target=attempt, args=(a, start)) for a in range(attempts)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout)
        assert process.exitcode == 0
