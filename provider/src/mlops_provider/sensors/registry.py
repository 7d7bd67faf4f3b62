"""Sensor that waits for a model version in the MLflow registry, deferred by default.

Deferred, the wait costs no worker slot: the triggerer polls (``MlflowModelVersionTrigger``).
``deferrable=False`` pokes from the worker instead (use ``mode="reschedule"`` for long waits).
Both return the matched version dict as the task's XCom.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
)

from mlops_provider.hooks.mlflow import MlflowApiError, MlflowHook
from mlops_provider.triggers.registry import MlflowModelVersionTrigger, VersionCondition

if TYPE_CHECKING:
    from airflow.sdk import Context

#: How BaseSensorOperator words its own poke-mode timeout (the message we replace).
_BASE_TIMEOUT_PREFIX = "Sensor has timed out"


class MlflowModelVersionSensor(BaseSensorOperator):
    """Wait until a registered model's version satisfies a condition; return that version.

    :param model_name: registered model (templated).
    :param alias: wait for the version ``model@alias`` points to (templated).
    :param version: wait for this version number instead; when it renders empty the sensor
        falls back to ``alias`` (templated).
    :param tag_absent: the version must not carry this tag, e.g. ``mlops.deploy.status``
        (= "not decided yet") (templated).
    :param tag_equals: tags the version must carry with exactly these values (templated).
    :param mlflow_conn_id: the MLflow connection (``mlflow_default``).
    :param deferrable: defer to the triggerer (default) instead of poking from the worker.
    :param request_timeout: seconds per HTTP request to MLflow.

    Every check also requires status READY. The XCom is MLflow's model version with ``tags``
    as a dict and ``aliases`` as a list. On ``timeout`` the task fails (or, with
    ``soft_fail``, is skipped) with a message naming the condition and how long it waited.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "version", "tag_absent", "tag_equals")
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        model_name: str,
        alias: str | None = None,
        version: str | int | None = None,
        tag_absent: str | None = None,
        tag_equals: Mapping[str, str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        deferrable: bool = True,
        request_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.version = None if version is None else str(version)
        self.tag_absent = tag_absent
        self.tag_equals = dict(tag_equals or {})
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self.request_timeout = request_timeout
        self._last_reason = ""
        if not any("{{" in str(v) for v in (model_name, alias, version)):
            self._condition()  # a literal mistake fails at DAG parse, not hours later

    def _condition(self) -> VersionCondition:
        try:
            return VersionCondition.build(
                self.model_name,
                alias=self.alias,
                version=self.version,
                tag_absent=self.tag_absent,
                tag_equals=self.tag_equals,
            )
        except ValueError as err:
            raise ValueError(f"{type(self).__name__} {self.task_id!r}: {err}") from None

    @cached_property
    def hook(self) -> MlflowHook:
        """One hook per task try: pokes in one process share its connection and HTTP session."""
        return MlflowHook(self.mlflow_conn_id, timeout=self.request_timeout)

    def _timeout_message(self, condition: VersionCondition | None = None) -> str:
        try:
            wanted = (condition or self._condition()).describe()
        except ValueError:
            wanted = f"model {self.model_name!r}"
        last = f"; last check: {self._last_reason}" if self._last_reason else ""
        if not self.timeout:  # timeout 0: one check, no wait (a run started by a candidate)
            return (
                f"checked once (no wait configured) for {wanted} on MLflow connection "
                f"{self.mlflow_conn_id!r}{last}. The candidate was decided or moved on since "
                f"the event that started this run."
            )
        how = "deferred" if self.deferrable else f"{self.mode} mode"
        return (
            f"timed out after {self.timeout:g} s ({how}) waiting for {wanted} on MLflow "
            f"connection {self.mlflow_conn_id!r}{last}. Check that the model version exists "
            f"(or raise this sensor's `timeout`)."
        )

    def _fail(self, message: str) -> AirflowException:
        """A failure that waiting cannot fix; skipped instead under ``soft_fail``."""
        if self.soft_fail:
            return AirflowSkipException(f"soft_fail: {message}")
        return AirflowFailException(message)

    # -- poke path (worker) ------------------------------------------------------------

    def poke(self, context: Context) -> PokeReturnValue:
        condition = self._condition()
        try:
            version = condition.fetch(self.hook)
        except MlflowApiError as err:
            if not err.transient:
                raise AirflowFailException(f"waiting for {condition.describe()}: {err}") from None
            self._last_reason = f"transient error: {err}"
            self.log.warning("Transient registry error (will retry): %s", err)
            return PokeReturnValue(is_done=False)
        verdict = condition.evaluate(version)
        if verdict.fatal:
            raise AirflowFailException(f"waiting for {condition.describe()}: {verdict.reason}")
        if verdict.reason != self._last_reason:
            self.log.info("%s: %s", "Found" if verdict.met else "Not yet", verdict.reason)
        self._last_reason = verdict.reason
        return PokeReturnValue(is_done=verdict.met, xcom_value=version if verdict.met else None)

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            return self._execute_deferrable(context)
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(self._timeout_message()) from err
        except AirflowSkipException as err:
            raise self._explained_skip(err) from err

    # -- deferred path (triggerer) -----------------------------------------------------

    def _execute_deferrable(self, context: Context) -> Any:
        condition = self._condition()
        try:  # already true? then no trip through the triggerer
            done = self.poke(context)
        except AirflowFailException as err:
            raise self._fail(str(err)) from None
        if not done.is_done:
            self.defer(
                trigger=MlflowModelVersionTrigger(
                    condition.model_name,
                    alias=condition.alias,
                    version=condition.version,
                    tag_absent=condition.tag_absent,
                    tag_equals=dict(condition.tag_equals),
                    mlflow_conn_id=self.mlflow_conn_id,
                    poll_interval=self.poke_interval,
                    request_timeout=self.request_timeout,
                    deadline=time.time() + self.timeout,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.timeout),
            )
        return done.xcom_value

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: the version dict, or a clear failure."""
        if event.get("status") == "found":
            version = event["version"]
            self.log.info("Found %s version %s", self.model_name, version.get("version"))
            return version
        if event.get("status") == "timeout":
            self._last_reason = str(event.get("message") or "")
            message = self._timeout_message()
            if self.soft_fail:
                raise AirflowSkipException(f"soft_fail: {message}")
            raise AirflowSensorTimeout(message)
        raise AirflowFailException(str(event.get("message") or f"unexpected event {event!r}"))

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context
    ) -> Any:
        """Replace Airflow's generic deferral-timeout message with what was waited for."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as err:
            raise AirflowSensorTimeout(self._timeout_message()) from err
        except AirflowSkipException as err:
            raise self._explained_skip(err) from err

    def _explained_skip(self, err: AirflowSkipException) -> AirflowSkipException:
        """BaseSensorOperator's soft_fail skips say only "Skipping due to soft_fail"; say why.

        Its ``resume_execution`` also re-wraps the explained skip that :meth:`execute_complete`
        raises for a trigger's timeout event (a skip is an AirflowException): keep ours.
        """
        cause = err.__cause__
        if isinstance(cause, AirflowSkipException) and str(cause).startswith("soft_fail: "):
            return AirflowSkipException(str(cause))
        if str(err).startswith(_BASE_TIMEOUT_PREFIX) or isinstance(cause, AirflowSensorTimeout):
            return AirflowSkipException(f"soft_fail: {self._timeout_message()}")
        if isinstance(cause, AirflowException) and not isinstance(cause, AirflowSkipException):
            return AirflowSkipException(f"soft_fail: {cause}")
        return err
