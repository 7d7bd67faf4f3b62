"""Wait in the triggerer for a model version to reach a state in the MLflow registry.

One condition object (:class:`VersionCondition`) is shared by the trigger and by the sensor's
poke path, so a deferred wait and a poking wait agree on what "found" means.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from mlops_provider.hooks.mlflow import MlflowApiError, MlflowHook

READY = "READY"
FAILED = "FAILED_REGISTRATION"
_UNSET = ("", "none", "null")


def _optional(value: Any) -> str | None:
    """Templated arguments render ``None``/empty as strings; both mean "not given"."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _UNSET else text


@dataclass(frozen=True)
class Verdict:
    met: bool
    reason: str
    #: The condition can never be met (e.g. the awaited version failed to register).
    fatal: bool = False


@dataclass(frozen=True)
class VersionCondition:
    """What to wait for on one registered model.

    * ``version`` given: that version number must exist and be READY (``alias`` is then only a
      fallback for when ``version`` renders empty, as in "deploy this version, else the
      challenger").
    * otherwise ``alias``: the version ``model@alias`` points to must be READY.

    Either way, optionally: tag ``tag_absent`` must not be set on it (e.g.
    ``mlops.deploy.status`` absent = "not decided yet"), and every ``tag_equals`` key must have
    exactly that value.
    """

    model_name: str
    alias: str | None = None
    version: str | None = None
    tag_absent: str | None = None
    tag_equals: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        model_name: Any,
        *,
        alias: Any = None,
        version: Any = None,
        tag_absent: Any = None,
        tag_equals: Mapping[str, Any] | None = None,
    ) -> VersionCondition:
        """Normalise (possibly rendered) arguments and reject impossible conditions early."""
        name = _optional(model_name)
        if not name:
            raise ValueError("model_name is required (the registered model to watch)")
        version_s = _optional(version)
        if version_s is not None and not version_s.isdigit():
            raise ValueError(f"version must be a version number like '3', got {version!r}")
        alias_s = _optional(alias)
        if version_s is None and alias_s is None:
            raise ValueError(
                f"give alias (e.g. 'challenger') or version to wait for on model {name!r}"
            )
        equals = {str(k): str(v) for k, v in (tag_equals or {}).items()}
        absent = _optional(tag_absent)
        if absent is not None and absent in equals:
            raise ValueError(f"tag {absent!r} cannot be both absent and equal to a value")
        return cls(name, alias_s, version_s, absent, equals)

    def describe(self) -> str:
        target = (
            f"{self.model_name} version {self.version}"
            if self.version
            else f"{self.model_name}@{self.alias}"
        )
        parts = [READY]
        if self.tag_absent:
            parts.append(f"tag {self.tag_absent!r} absent")
        parts.extend(f"tag {k!r} == {v!r}" for k, v in self.tag_equals.items())
        return f"{target} ({', '.join(parts)})"

    def evaluate(self, version: Mapping[str, Any] | None) -> Verdict:
        """Judge one fetched version dict (``None``: the model, version or alias is absent)."""
        if version is None:
            missing = (
                f"version {self.version} does not exist"
                if self.version
                else f"alias {self.alias!r} is not set"
            )
            return Verdict(False, missing)
        number = version.get("version")
        status = version.get("status", READY)
        if status == FAILED and self.version:
            return Verdict(
                False,
                f"version {number} failed to register: {version.get('status_message', '')}",
                fatal=True,
            )
        if status != READY:
            return Verdict(False, f"version {number} is {status}")
        tags: Mapping[str, str] = version.get("tags") or {}
        if self.tag_absent and self.tag_absent in tags:
            return Verdict(
                False, f"version {number} has tag {self.tag_absent}={tags[self.tag_absent]!r}"
            )
        for key, expected in self.tag_equals.items():
            if tags.get(key) != expected:
                return Verdict(False, f"version {number} has tag {key}={tags.get(key)!r}")
        return Verdict(True, f"version {number} matches {self.describe()}")

    async def afetch(self, hook: MlflowHook) -> dict[str, Any] | None:
        if self.version:
            try:
                return await hook.aget_model_version(self.model_name, self.version)
            except MlflowApiError as err:
                if err.not_found:
                    return None
                raise
        assert self.alias is not None  # build() guarantees one of the two
        return await hook.aget_version_by_alias(self.model_name, self.alias)

    def fetch(self, hook: MlflowHook) -> dict[str, Any] | None:
        if self.version:
            try:
                return hook.get_model_version(self.model_name, self.version)
            except MlflowApiError as err:
                if err.not_found:
                    return None
                raise
        assert self.alias is not None
        return hook.get_version_by_alias(self.model_name, self.alias)


class MlflowModelVersionTrigger(BaseTrigger):
    """Poll the registry every ``poll_interval`` seconds until :class:`VersionCondition` holds.

    Yields exactly one event: ``{"status": "found", "version": {...}}`` (the version dict, tags
    as a dict), ``{"status": "error", "message": ...}`` for what waiting cannot fix (401/403,
    a malformed request, a missing connection, the awaited version failed to register), or
    ``{"status": "timeout", "message": <last reason>}`` once ``deadline`` passes.
    Unreachable server, timeouts and 5xx/429 are logged and retried; the task's deferral
    timeout bounds the whole wait.
    """

    def __init__(
        self,
        model_name: str,
        *,
        alias: str | None = None,
        version: str | None = None,
        tag_absent: str | None = None,
        tag_equals: Mapping[str, str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        poll_interval: float = 30.0,
        request_timeout: float = 30.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.condition = VersionCondition.build(
            model_name, alias=alias, version=version, tag_absent=tag_absent, tag_equals=tag_equals
        )
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)
        self.request_timeout = float(request_timeout)
        # Epoch seconds. The scheduler enforces the deferral timeout too, but a trigger run
        # inline (dag.test) is only bounded by this.
        self.deadline = None if deadline is None else float(deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        c = self.condition
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_name": c.model_name,
                "alias": c.alias,
                "version": c.version,
                "tag_absent": c.tag_absent,
                "tag_equals": dict(c.tag_equals),
                "mlflow_conn_id": self.mlflow_conn_id,
                "poll_interval": self.poll_interval,
                "request_timeout": self.request_timeout,
                "deadline": self.deadline,
            },
        )

    @cached_property
    def hook(self) -> MlflowHook:
        """Reads the connection once per run of this trigger, not once per poll."""
        return MlflowHook(self.mlflow_conn_id, timeout=self.request_timeout)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        wanted = self.condition.describe()
        self.log.info("Waiting for %s, polling every %g s", wanted, self.poll_interval)
        last_reason = ""
        failures = 0
        while True:
            try:
                version = await self.condition.afetch(self.hook)
            except MlflowApiError as err:
                if not err.transient:
                    yield TriggerEvent(
                        {"status": "error", "message": f"waiting for {wanted}: {err}"}
                    )
                    return
                failures += 1
                self.log.warning("Transient registry error #%d (retrying): %s", failures, err)
            else:
                failures = 0
                verdict = self.condition.evaluate(version)
                if verdict.met:
                    self.log.info("Condition met: %s", verdict.reason)
                    yield TriggerEvent({"status": "found", "version": version})
                    return
                if verdict.fatal:
                    yield TriggerEvent(
                        {"status": "error", "message": f"waiting for {wanted}: {verdict.reason}"}
                    )
                    return
                if verdict.reason != last_reason:  # log changes, not every poll
                    self.log.info("Not yet: %s", verdict.reason)
                    last_reason = verdict.reason
            if self.deadline is not None:
                left = self.deadline - time.time()
                if left <= 0:
                    yield TriggerEvent({"status": "timeout", "message": last_reason})
                    return
                await asyncio.sleep(min(self.poll_interval, left))
            else:
                await asyncio.sleep(self.poll_interval)
