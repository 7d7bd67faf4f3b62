"""The ``[core] hostname_callable`` of the distributed stack's Celery workers
(scripts/distributed_stack.py puts this directory on their ``PYTHONPATH``).

Two workers on one machine share its host name, and Airflow records a task instance's host from
``hostname_callable``: each worker gets a host name of its own (:data:`WORKER_HOSTNAME_ENV`), so
the task instances say which worker ran them, as they would on separate machines. These names do
not resolve: the API server reads a finished task's log from the log folder the workers share,
but cannot fetch a running task's log from its worker's log server.
"""

from __future__ import annotations

import os
import socket

#: The environment variable that names a worker's host for :func:`worker_hostname`.
WORKER_HOSTNAME_ENV = "MLOPS_STACK_WORKER_HOSTNAME"


def worker_hostname() -> str:
    """The host name Airflow records for task instances run by this worker."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()
