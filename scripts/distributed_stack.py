"""The distributed profile on loopback: the topology production teams run, on this machine.

* Airflow's metadata in a PostgreSQL database of its own; the CeleryExecutor with a Redis broker
  and its results in that database; two schedulers (HA), two Celery workers (``worker-a``,
  ``worker-b``), the DAG processor, the triggerer and the API server, each in its own process
  group (scripts/local_airflow.py, scripts/celery_support.py).
* MLflow on a PostgreSQL database of its own, its artifacts in an S3 bucket of ``moto_server``
  (scripts/moto_store.py).
* A data-plane bucket: data partitions, prediction logs, labels and the model store are object
  store prefixes (:attr:`DistributedStack.env`), and each worker has a local MLOPS_HOME of its own,
  so the workers share only PostgreSQL, Redis and the object store.

PostgreSQL (127.0.0.1:5432, user ``postgres``) and Redis (127.0.0.1:6379) are the machine's: a
stack makes its own databases (``mlops_<purpose>_<id>``) and drops them on :meth:`stop`; in Redis
it owns only the keys under its prefix (``mlops-<id>:``, kombu's ``global_keyprefix``) and sends
its tasks to a queue of its own (``mlops-<id>``), so two stacks on one Redis (a test and a demo)
never take each other's tasks; it deletes its keys on stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery_support
from local_airflow import REPO, CeleryBroker, Component, LiveAirflow, celery_worker
from mlflow_server import MlflowServer, start_server, stop_pid
from moto_store import MotoServer
from processes import free_port

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: The only database names a stack creates or drops (never ``postgres``, ``test``, ``root``...).
OWN_DATABASE = re.compile(r"mlops_[a-z]+_[0-9a-f]{8}")
WORKERS = ("worker-a", "worker-b")
SCHEDULERS = ("scheduler-1", "scheduler-2")


class ServiceDown(RuntimeError):
    """A service the distributed profile needs is not reachable."""


def _reachable(host: str, port: int) -> str | None:
    """None if something accepts connections on ``host:port``, else why not."""
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as error:
        return str(error)
    return None


def require_services() -> None:
    """Fail at once, naming the service that is down and the command that starts it."""
    down = []
    if (error := _reachable(PG_HOST, PG_PORT)) is not None:
        down.append(
            f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} ({error}); start it with "
            "`pg_ctlcluster 15 main start` (or `service postgresql start`)"
        )
    if (error := _reachable(REDIS_HOST, REDIS_PORT)) is not None:
        down.append(
            f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT} ({error}); start it with "
            "`service redis-server start`"
        )
    if down:
        raise ServiceDown("the distributed profile needs: " + "; ".join(down))


def restart_postgres(timeout: float = 60) -> None:
    """Restart the machine's PostgreSQL cluster on :data:`PG_PORT` (every session of every
    database is cut, as a fail-over or a crash-restart does) and wait until it accepts
    connections again. Debian's ``pg_ctlcluster``; only the fault test uses this."""
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    found = [line.split() for line in clusters.stdout.splitlines()]
    cluster = next((c for c in found if len(c) > 2 and c[2] == str(PG_PORT)), None)
    if cluster is None:
        raise ServiceDown(f"no PostgreSQL cluster on port {PG_PORT} in `pg_lsclusters`")
    version, name = cluster[0], cluster[1]
    subprocess.run(["pg_ctlcluster", "-m", "fast", version, name, "restart"], check=True,
                   capture_output=True, timeout=timeout)  # fmt: skip
    deadline = time.monotonic() + timeout
    while _reachable(PG_HOST, PG_PORT) is not None:
        if time.monotonic() > deadline:
            raise ServiceDown(f"PostgreSQL did not come back on {PG_PORT} within {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class PostgresDatabases:
    """The databases one stack made on the machine's PostgreSQL (dropped by :meth:`drop_all`;
    ``names`` keeps them, so :meth:`existing` can tell they are gone).
    The ``postgres`` database is only the maintenance connection for CREATE/DROP DATABASE."""

    host: str = PG_HOST
    port: int = PG_PORT
    user: str = PG_USER
    names: list[str] = field(default_factory=list)

    def create(self, purpose: str, suffix: str) -> str:
        """A new database ``mlops_<purpose>_<suffix>`` (``suffix``: 8 hex digits)."""
        name = _own(f"mlops_{purpose}_{suffix}")
        with self._maintenance() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return name

    def url(self, name: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{_own(name)}"

    @contextlib.contextmanager
    def connect(self, name: str) -> Iterator[Any]:
        """A cursor on database ``name`` (autocommit)."""
        import psycopg2

        db = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=_own(name))
        db.autocommit = True
        try:
            with db.cursor() as cursor:
                yield cursor
        finally:
            db.close()

    def existing(self) -> list[str]:
        """Which of this stack's databases the server still has."""
        with self._maintenance() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (self.names,))
            return sorted(row[0] for row in cursor.fetchall())

    def drop_all(self) -> None:
        """Drop this stack's databases, ending their sessions first."""
        with self._maintenance() as cursor:
            for name in reversed(self.names):
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (_own(name),),
                )
                cursor.execute(f'DROP DATABASE IF EXISTS "{_own(name)}" WITH (FORCE)')

    @contextlib.contextmanager
    def _maintenance(self) -> Iterator[Any]:
        import psycopg2

        db = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        db.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        try:
            with db.cursor() as cursor:
                yield cursor
        finally:
            db.close()


def _own(name: str) -> str:
    if not OWN_DATABASE.fullmatch(name):
        raise ValueError(f"not a database of a distributed stack: {name!r}")
    return name


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of one stack: everything under ``prefix``."""

    prefix: str
    url: str = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

    def find(self) -> list[str]:
        """The keys under the prefix."""
        import redis

        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            return sorted(client.scan_iter(match=f"{self.prefix}*", count=1000))
        finally:
            client.close()

    def delete(self) -> int:
        """Delete them; how many there were."""
        import redis

        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
            return len(keys)
        finally:
            client.close()


@dataclass
class DistributedStack:
    """A running distributed profile (see the module's docstring); :meth:`stop` ends it all."""

    home: Path
    stack_id: str
    databases: PostgresDatabases
    redis: RedisKeys
    queue: str  # the Celery queue of this stack's tasks
    moto: MotoServer
    data_bucket: str
    artifact_bucket: str
    mlflow: MlflowServer
    airflow: LiveAirflow
    workers: dict[str, str]  # worker name -> the host name its task instances record
    _cleanup: contextlib.ExitStack = field(repr=False)

    @property
    def data_root(self) -> str:
        return f"s3://{self.data_bucket}/pipeline"

    @property
    def airflow_database(self) -> str:
        return self.databases.names[0]

    @property
    def env(self) -> dict[str, str]:
        """The data plane and the S3 endpoint, as every Airflow component and worker gets them."""
        return data_plane_env(self.data_bucket, self.moto)

    @property
    def pids(self) -> dict[str, int]:
        return {"moto": self.moto.pid, "mlflow": self.mlflow.pid, **self.airflow.pids}

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        dags_folder: Path = REPO / "dags",
        users: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        airflow_port: int | None = None,
        mlflow_port: int | None = None,
    ) -> DistributedStack:
        """Start everything under ``home`` and wait for the API server; on any failure, stop
        what had started. ``extra_env`` goes to every Airflow component."""
        require_services()
        stack_id = secrets.token_hex(4)
        logs = home / "airflow" / "process-logs"
        logs.mkdir(parents=True, exist_ok=True)
        cleanup = contextlib.ExitStack()  # what stop() undoes, last started first
        try:
            databases = PostgresDatabases()
            cleanup.callback(databases.drop_all)
            airflow_db = databases.create("airflow", stack_id)
            mlflow_db = databases.create("mlflow", stack_id)
            redis_keys = RedisKeys(f"mlops-{stack_id}:")
            cleanup.callback(redis_keys.delete)  # runs after the workers have stopped
            queue = f"mlops-{stack_id}"
            moto = MotoServer.start(logs)
            cleanup.callback(moto.stop)
            data_bucket, artifact_bucket = f"mlops-data-{stack_id}", f"mlops-mlflow-{stack_id}"
            moto.create_bucket(data_bucket)
            moto.create_bucket(artifact_bucket)
            mlflow_port = mlflow_port or free_port()
            airflow = LiveAirflow.configure(
                home / "airflow",
                dags_folder=dags_folder,
                port=airflow_port or free_port(),
                users=users or {"admin": "admin"},
                base_env=base_env or _without_airflow_or_mlops(),
                database_url=databases.url(airflow_db),
                celery=CeleryBroker(
                    broker_url=redis_keys.url,
                    result_backend=f"db+{databases.url(airflow_db)}",
                    queue=queue,
                    transport_options={"global_keyprefix": redis_keys.prefix},
                ),
                extra_env={
                    "AIRFLOW_CONN_MLFLOW_DEFAULT": f"http://127.0.0.1:{mlflow_port}",
                    "MLOPS_HOME": str(home / "mlops"),
                    "MLOPS_RUNNER": "local",
                    "MLFLOW_DISABLE_TELEMETRY": "true",
                    # A task whose worker died is failed (and retried elsewhere) after 40 s
                    # without heartbeats (a live task beats every few seconds), not Airflow's
                    # default five minutes; a dead scheduler's tasks are adopted by the other
                    # one within half a minute.
                    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "40",
                    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
                    # A task queued whose message never reached a worker (its scheduler died
                    # while sending it, e.g. when PostgreSQL restarted) is queued again after
                    # two minutes, not Airflow's default ten.
                    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
                    **data_plane_env(data_bucket, moto),
                    **dict(extra_env or {}),
                },
            )
            cleanup.callback(airflow.stop)
            with ThreadPoolExecutor(1) as pool:  # MLflow's start-up overlaps Airflow's migration
                starting = pool.submit(
                    start_server,
                    home / "mlflow",
                    mlflow_port,
                    backend_store_uri=databases.url(mlflow_db),
                    artifacts_destination=f"s3://{artifact_bucket}/mlflow",
                    extra_env={**moto.env(), "MLFLOW_DISABLE_TELEMETRY": "true"},
                )
                try:
                    airflow.migrate()
                finally:
                    mlflow = starting.result()
                    cleanup.callback(stop_pid, mlflow.pid)
            workers = {name: f"{name}.{stack_id}" for name in WORKERS}
            airflow.start(
                [
                    "api-server",
                    *(Component(name, ("scheduler",)) for name in SCHEDULERS),
                    "dag-processor",
                    "triggerer",
                    *(_worker(name, host, home, queue) for name, host in workers.items()),
                ]
            )
            airflow.supervise()  # a component that exits by itself starts again (see there)
            airflow.wait_until_up()
        except BaseException:
            cleanup.close()
            raise
        return cls(
            home, stack_id, databases, redis_keys, queue, moto, data_bucket, artifact_bucket,
            mlflow, airflow, workers, cleanup,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL one Airflow component's process group (``worker-a``, ``scheduler-1``...)."""
        self.airflow.kill(name)

    def restart(self, name: str) -> None:
        self.airflow.restart(name)

    def alive_jobs(self, job_type: str = "SchedulerJob", within_s: int = 30) -> int:
        """How many ``job_type`` jobs are running with a heartbeat in the last ``within_s``."""
        with self.databases.connect(self.airflow_database) as cursor:
            cursor.execute(
                "SELECT count(*) FROM job WHERE job_type = %s AND state = 'running'"
                " AND latest_heartbeat > now() - make_interval(secs => %s)",
                (job_type, within_s),
            )
            return int(cursor.fetchone()[0])

    def stop(self) -> None:
        """Stop every process by its own PID, then delete the Redis keys and drop the
        databases."""
        self._cleanup.close()

    def leftovers(self) -> dict[str, Any]:
        """What outlives the processes (for :func:`remove_leftovers` after a kept-running stack
        was stopped by its PIDs)."""
        return {"databases": list(self.databases.names), "redis_prefix": self.redis.prefix}


def remove_leftovers(leftovers: dict[str, Any]) -> None:
    """Drop a stopped stack's databases and delete its Redis keys."""
    PostgresDatabases(names=[_own(n) for n in leftovers.get("databases", [])]).drop_all()
    prefix = str(leftovers.get("redis_prefix") or "")
    if re.fullmatch(r"mlops-[0-9a-f]{8}:", prefix):
        RedisKeys(prefix).delete()


def data_plane_env(bucket: str, moto: MotoServer) -> dict[str, str]:
    root = f"s3://{bucket}"
    return {
        "MLOPS_DATA_ROOT": f"{root}/pipeline",
        "MLOPS_PREDICTION_LOG": f"{root}/predictions/{{model}}",
        "MLOPS_LABELS": f"{root}/labels/{{model}}",
        "MLOPS_MODEL_STORE": f"{root}/model-store/{{model}}",
        **moto.env(),
    }


def _worker(name: str, hostname: str, home: Path, queue: str) -> Component:
    """A worker with a local MLOPS_HOME, a log server port and a host name of its own."""
    return celery_worker(
        name,
        queue=queue,
        env={
            "MLOPS_HOME": str(home / name),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "celery_support.worker_hostname",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")) if p
            ),
            celery_support.WORKER_HOSTNAME_ENV: hostname,
        },
    )


def _without_airflow_or_mlops() -> dict[str, str]:
    """This process's environment without Airflow's or the project's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
