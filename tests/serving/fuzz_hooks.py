"""Schemathesis hooks for the service's fuzz run (loaded with ``SCHEMATHESIS_HOOKS``).

One rule of ``/predict/batch`` is beyond JSON Schema: ``entity_ids`` has exactly one entry per
instance. The generated bodies are made to keep it, by padding ``entity_ids`` with nulls or
repeating instances, which keeps whatever else a negative case made invalid; a count mismatch
itself is a 422 that tests/serving/test_tasks.py checks.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any = None) -> None:
    """Every phase's cases (the coverage phase builds its own, past ``map_body``)."""
    body = case.body
    if case.operation.path != "/predict/batch" or not isinstance(body, dict):
        return
    ids, instances = body.get("entity_ids"), body.get("instances")
    if not isinstance(ids, list) or not isinstance(instances, list) or not instances:
        return
    if len(ids) < len(instances):
        body["entity_ids"] = [*ids, *([None] * (len(instances) - len(ids)))]
    elif len(ids) > len(instances):
        body["instances"] = [instances[i % len(instances)] for i in range(len(ids))]
