"""The local runner: a step's command line as a child process of the worker (the embedded
default), with the same argv and environment a pod would get."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlops_provider.operators.connections import _connection_candidates, first_connection_field
from mlops_provider.operators.env_guard import refuse_credentials_in_url
from mlops_steps.core.errors import EXIT_REJECTED, EXIT_SKIPPED
from mlops_steps.core.results import RESULT_MARKER
from mlops_steps.core.spec import StepSpec

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Process basics a local child inherits from the worker; a pod gets these from its image.
#: MLOPS_MODELS_DIR: the child must read its model's contract where the worker built the DAG
#: from (without it, a model outside the repository's models/ stops every step with exit 2).
LOCAL_PASSTHROUGH_ENV = (
    "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "VIRTUAL_ENV", "MLOPS_CODE_SHA", "MLOPS_MODELS_DIR",
    # Where the S3 SDKs find an S3-compatible store (configuration, not credentials).
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    "MLFLOW_S3_ENDPOINT_URL",
)  # fmt: skip


class LocalStepOperator(BaseOperator):
    """Run a step's command line as a local child process (the embedded default runner).

    Output streams into the task log; the step's result line becomes the task's XCom. Exit code 2
    (bad input or a negative decision) fails the task without retries: a retry would repeat it.
    Secrets come from the worker's environment, else from the Airflow connection field each one
    names (``secret_connections``: variable -> (conn_id, field), or several such pairs in the
    order to look: the first connection that exists decides, even without that field, so a
    model's own connection never falls through to another's secret); values are never logged.
    """

    template_fields: Sequence[str] = ("arguments", "env_vars")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        cmds: list[str],
        arguments: list[str],
        env_vars: dict[str, str],
        secret_env: Sequence[str] = (),
        secret_connections: Mapping[str, tuple[str, str] | Sequence[tuple[str, str]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cmds = cmds
        self.arguments = arguments
        self.env_vars = env_vars
        self.secret_env = tuple(secret_env)
        #: variable -> the (conn_id, field) pairs to look in, in order.
        self.secret_connections: dict[str, tuple[tuple[str, str], ...]] = {
            name: _connection_candidates(where)
            for name, where in (secret_connections or {}).items()
        }
        self._process: subprocess.Popen[str] | None = None

    def process_environment(self) -> dict[str, str]:
        """What the child sees: the declared env, secrets present in the worker's env, and the
        process basics (PATH puts this interpreter's scripts first, so ``mlops-step`` resolves to
        the environment Airflow runs in)."""
        bin_dir = str(Path(sys.executable).parent)
        env = {k: os.environ[k] for k in LOCAL_PASSTHROUGH_ENV if k in os.environ}
        env["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")])
        env.update({name: os.environ[name] for name in self.secret_env if name in os.environ})
        read: dict[str, Any] = {}  # each connection looked up once per task
        for name, candidates in self.secret_connections.items():
            if name not in env:
                found = first_connection_field(candidates, read)
                if found is not None:
                    conn_id, field, value = found
                    env[name] = value
                    self.log.info("%s: from connection %s (%s)", name, conn_id, field)
        env.update(self.env_vars)
        return env

    def execute(self, context: Context) -> Any:
        argv = [*self.cmds, *self.arguments]
        self.log.info("Running: %s", " ".join(argv))
        result: Any = None
        self._process = process = subprocess.Popen(
            argv,
            env=self.process_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT_MARKER):
                result = json.loads(line[len(RESULT_MARKER) :])
            else:
                self.log.info("%s", line.rstrip("\n"))
        returncode = process.wait()
        self._process = None
        if returncode == EXIT_SKIPPED:
            raise AirflowSkipException(f"step {self.arguments[0]!r} had nothing to do (exit 3)")
        if returncode == EXIT_REJECTED:
            raise AirflowFailException(
                f"step {self.arguments[0]!r} rejected its input (exit 2); see the error above. "
                "Not retried: a retry would reach the same decision."
            )
        if returncode != 0:
            raise AirflowException(f"step {self.arguments[0]!r} failed with exit code {returncode}")
        return result

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def plain_environment(spec: StepSpec) -> dict[str, str]:
    """The step's literal env values, each checked to carry no URL credentials (templated ones
    are checked when they render, by the macro that produces them)."""
    env = spec.environment()
    for name, value in env.items():
        if "{{" not in value:
            refuse_credentials_in_url(value, source=f"the step environment variable {name}")
    return env


def secret_lookup(spec: StepSpec) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each secret variable's (conn_id, field) pairs, in the order the spec lists them."""
    lookup: dict[str, tuple[tuple[str, str], ...]] = {}
    for secret in spec.secrets:
        if secret.connection:
            lookup[secret.env] = (*lookup.get(secret.env, ()), (secret.connection, secret.field))
    return lookup


def build_local_operator(spec: StepSpec, **operator_kwargs: Any) -> LocalStepOperator:
    argv = spec.argv()
    return LocalStepOperator(
        task_id=spec.task_id,
        cmds=argv[:1],
        arguments=argv[1:],
        env_vars=plain_environment(spec),
        secret_env=list(dict.fromkeys(s.env for s in spec.secrets)),
        secret_connections=secret_lookup(spec),
        execution_timeout=spec.timeout,
        **operator_kwargs,
    )
