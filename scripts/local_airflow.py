"""Airflow on loopback for the embedded default.

* :func:`local_airflow_env`: the environment that runs this project's DAGs (``airflow dags test``,
  ``scripts/dag_test.py``): the repository's dags/ and plugins/, the local runner, and MLflow
  through the ``mlflow_default`` connection.
* :class:`LiveAirflow`: what ``airflow standalone`` starts (API server, scheduler, DAG processor,
  triggerer; SQLite and the LocalExecutor), as separate processes in their own process groups so
  they stop by their own PIDs, with a REST client (scripts/airflow_rest.py) logged in as a
  SimpleAuthManager user. The lifecycle demo (scripts/lifecycle.py) and the live alert test use
  it.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airflow_rest import AirflowRest, ApiError
from processes import free_port, stop_process_groups, wait_for

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def local_airflow_env(home: Path, mlflow_url: str) -> dict[str, str]:
    """``os.environ`` plus what `airflow dags test` needs, with all state under ``home``."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_url,
        "MLOPS_HOME": str(home),
        "MLOPS_RUNNER": "local",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@dataclass
class LiveAirflow:
    """Airflow components started from ``env`` under ``home`` (see :meth:`start`)."""

    home: Path
    port: int
    env: dict[str, str]
    users: dict[str, str]  # SimpleAuthManager user -> password
    logs: Path
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def configure(
        cls,
        home: Path,
        *,
        dags_folder: Path,
        port: int,
        users: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> LiveAirflow:
        """An Airflow home with a SQLite database, SimpleAuthManager users (``name -> role``)
        with generated passwords, its own JWT secret and free ports for the log servers."""
        home.mkdir(parents=True, exist_ok=True)
        logs = home / "process-logs"
        logs.mkdir(exist_ok=True)
        passwords = {user: secrets.token_urlsafe(12) for user in users}
        (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(passwords))
        base = dict(os.environ if base_env is None else base_env)
        env = {k: v for k, v in base.items() if not k.startswith("AIRFLOW__")}
        base_url = f"http://127.0.0.1:{port}"
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                    f"{user}:{role}" for user, role in users.items()
                ),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
                "AIRFLOW__API__BASE_URL": base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                # The scheduler's and triggerer's log servers (8793/8794 by default) on free
                # ports, so another local Airflow does not collide with this one.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "GX_ANALYTICS_ENABLED": "False",
                "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                **dict(extra_env or {}),
            }
        )
        return cls(home, port, env, passwords, logs)

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=600,
        )

    def python(self, code: str, timeout: float = 300) -> str:
        """Run ``code`` in a Python process with this Airflow's environment; its stdout."""
        done = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"python -c failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, components: tuple[str, ...] = COMPONENTS) -> None:
        """Start each component in its own session (stopped with its workers by its PID)."""
        for component in components:
            with (self.logs / f"{component}.log").open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "airflow", component],
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pids[component] = process.pid

    def stop(self, timeout: float = 30) -> None:
        stop_process_groups(list(self.pids.values()), timeout)
        self.pids.clear()

    @functools.cached_property
    def rest(self) -> AirflowRest:
        """The REST client, as the first configured user."""
        user = next(iter(self.users))
        return AirflowRest(self.base_url, user, self.users[user])

    def wait_until_up(self, timeout: float = 180) -> None:
        wait_for(
            "the Airflow API server",
            self.rest.login,
            timeout,
            self.logs,
            errors=(OSError, ValueError, ApiError),
        )
