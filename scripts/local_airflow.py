"""Airflow on loopback for the embedded default.

* :func:`local_airflow_env`: the environment that runs this project's DAGs (``airflow dags test``,
  ``scripts/dag_test.py``): the repository's dags/ and plugins/, the local runner, and MLflow
  through the ``mlflow_default`` connection.
* :class:`LiveAirflow`: what ``airflow standalone`` starts (API server, scheduler, DAG processor,
  triggerer; SQLite and the LocalExecutor), as separate processes in their own process groups so
  they stop by their own PIDs, with a REST client (scripts/airflow_rest.py) logged in as a
  SimpleAuthManager user. The lifecycle demo (scripts/lifecycle.py) and the live alert test use
  it. The distributed profile (scripts/distributed_stack.py) configures the same class for
  PostgreSQL and the CeleryExecutor (:class:`CeleryBroker`) and starts more than one process of a
  kind (:class:`Component`: two schedulers, two Celery workers with their own environments); a
  component can be killed and restarted by its name.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from airflow_rest import AirflowRest, ApiError
from processes import free_port, kill_tree, stop_process_groups, wait_for

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


@dataclass(frozen=True)
class Component:
    """One Airflow process: ``name`` keys its PID and names its log, ``args`` are its Airflow CLI
    arguments, ``env`` what it gets on top of the Airflow's environment."""

    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: str | Component) -> Component:
        """A component given by its CLI command alone (``"scheduler"``) is named after it."""
        return spec if isinstance(spec, Component) else cls(spec, (spec,))


def celery_worker(
    name: str, *, queue: str, concurrency: int = 2, env: Mapping[str, str] | None = None
) -> Component:
    """A Celery worker named ``name@<host>`` that takes tasks from ``queue`` only."""
    return Component(
        name,
        ("celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", queue,
         "--concurrency", str(concurrency), "--without-mingle", "--without-gossip"),
        dict(env or {}),
    )  # fmt: skip


@dataclass(frozen=True)
class CeleryBroker:
    """The CeleryExecutor's settings: a broker, a result backend, and the queue its tasks go to
    by default; ``transport_options`` land in ``[celery_broker_transport_options]`` (for a Redis
    broker shared by several Airflows, ``global_keyprefix`` keeps each one's keys apart)."""

    broker_url: str
    result_backend: str
    queue: str = "default"
    transport_options: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self.result_backend,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            **{
                f"AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__{key.upper()}": value
                for key, value in self.transport_options.items()
            },
        }


def database_env(database_url: str | None, home: Path) -> dict[str, str]:
    """The metadata database: SQLite under ``home`` unless ``database_url`` names another
    (Airflow derives its async engine's URL from it: asyncpg for PostgreSQL)."""
    url = database_url or f"sqlite:///{home / 'airflow.db'}"
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}


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
    #: How each started component was started (what :meth:`restart` starts again).
    components: dict[str, Component] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _supervising: threading.Event = field(default_factory=threading.Event, repr=False)

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
        database_url: str | None = None,
        executor: str | None = None,
        celery: CeleryBroker | None = None,
    ) -> LiveAirflow:
        """An Airflow home with a SQLite database (or ``database_url``), SimpleAuthManager users
        (``name -> role``) with generated passwords, its own JWT secret and free ports for the
        log servers. The executor is ``executor``, else the CeleryExecutor with ``celery``,
        else the LocalExecutor."""
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
                **database_env(database_url, home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": executor
                or ("CeleryExecutor" if celery else "LocalExecutor"),
                **(celery.env() if celery else {}),
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

    def start(self, components: Iterable[str | Component] = COMPONENTS) -> None:
        """Start each component in its own session (stopped with its workers by its PID)."""
        with self._lock:
            for spec in components:
                component = Component.of(spec)
                if component.name in self.pids:
                    raise ValueError(f"{component.name} is running already")
                with (self.logs / f"{component.name}.log").open("ab") as out:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "airflow", *component.args],
                        env={**self.env, **component.env},
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self.pids[component.name] = process.pid
                self.components[component.name] = component
                self._processes[component.name] = process

    def supervise(self, interval: float = 1.0) -> None:
        """Start again any component that exits by itself, as Kubernetes, systemd or Compose's
        ``restart:`` do in production (a triggerer exits when its database connection is cut,
        e.g. by a PostgreSQL restart). A component stopped on purpose (:meth:`kill`,
        :meth:`stop`) stays down."""
        self._supervising.set()

        def watch() -> None:
            while self._supervising.is_set():
                with self._lock:
                    exited = [n for n, p in self._processes.items()
                              if n in self.pids and p.poll() is not None]  # fmt: skip
                    for name in exited:
                        code = self._processes[name].returncode
                        stop_process_groups([self.pids.pop(name)], 5)  # what it left behind
                        with (self.logs / f"{name}.log").open("a") as out:
                            out.write(f"\n[supervisor] {name} exited with {code}: restarting\n")
                        self.start([self.components[name]])
                time.sleep(interval)

        threading.Thread(target=watch, name="airflow-supervisor", daemon=True).start()

    def kill(self, name: str, timeout: float = 10) -> None:
        """SIGKILL component ``name`` with every process under it, the task processes a
        worker runs included (a lost machine: no clean-up), and wait up to ``timeout`` for
        them to be gone. It stays down until :meth:`restart`."""
        with self._lock:
            pid = self.pids.pop(name)
        kill_tree(pid, timeout)

    def restart(self, name: str, timeout: float = 30) -> None:
        """Stop component ``name`` if it runs (SIGTERM, then SIGKILL), and start it again."""
        with self._lock:
            if name in self.pids:
                stop_process_groups([self.pids.pop(name)], timeout)
            self.start([self.components[name]])

    def stop(self, timeout: float = 30) -> None:
        self._supervising.clear()
        with self._lock:
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
