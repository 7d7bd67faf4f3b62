"""What the Celery side of the distributed stack (scripts/distributed_stack.py) loads in its
Airflow processes before Airflow itself: :data:`LAUNCHER` starts ``airflow <args>`` after
:func:`install_compat`, and :func:`worker_hostname` is the ``[core] hostname_callable`` of each
Celery worker.

* The Celery provider 3.26.0 imports ``retry`` from ``celery.backends.database``, which Celery 5.7
  removed (its DatabaseBackend now retries by itself), so ``CeleryExecutor`` does not even import
  with the pinned pair. :func:`install_compat` puts back Celery 5.6's decorator, only where it is
  missing: delete this once constraints.txt pins a compatible pair.
* Two workers on one machine share its host name, and Airflow records a task instance's host from
  ``hostname_callable``: each worker gets a host name of its own (:data:`WORKER_HOSTNAME_ENV`), so
  the task instances say which worker ran them, as they would on separate machines. These names
  do not resolve: the API server reads a finished task's log from the log folder the workers
  share, but cannot fetch a running task's log from its worker's log server.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
#: The environment variable that names a worker's host for :func:`worker_hostname`.
WORKER_HOSTNAME_ENV = "MLOPS_STACK_WORKER_HOSTNAME"
#: ``[*LAUNCHER, *airflow_cli_args]`` runs the Airflow CLI with the compat shim installed (forked
#: children, such as Celery's pool and the task supervisors, inherit it).
LAUNCHER: tuple[str, ...] = (
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import celery_support;"
    " celery_support.install_compat(); from airflow.__main__ import main; main()",
)


def worker_hostname() -> str:
    """The host name Airflow records for task instances run by this worker."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


def install_compat() -> None:
    """Give ``celery.backends.database`` the ``retry`` decorator the Celery provider imports."""
    from celery.backends import database

    if not hasattr(database, "retry"):
        database.retry = _retry


def _retry(fun: Callable[..., Any]) -> Callable[..., Any]:
    """Celery 5.6's ``celery.backends.database.retry``: up to ``max_retries`` (3) attempts on
    database errors."""
    from sqlalchemy.exc import DatabaseError, InvalidRequestError
    from sqlalchemy.orm.exc import StaleDataError

    @functools.wraps(fun)
    def inner(*args: Any, **kwargs: Any) -> Any:
        max_retries = kwargs.pop("max_retries", 3)
        for attempt in range(max_retries):
            try:
                return fun(*args, **kwargs)
            except (DatabaseError, InvalidRequestError, StaleDataError):
                logging.getLogger(__name__).warning(
                    "Failed operation %s. Retrying %s more times.",
                    fun.__name__,
                    max_retries - attempt - 1,
                    exc_info=True,
                )
                if attempt + 1 >= max_retries:
                    raise
        return None

    return inner
