"""Reading Airflow connections for the steps: a secret's field (the local runner's fallback
for a variable the worker's environment lacks) and a model's own service URL (a macro)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlops_provider.operators.env_guard import refuse_credentials_in_url


def model_service_url(conn_id: str) -> str:
    """Template macro: the URL of a model's own service from its serving connection
    (``mlops_serving__<model>``), as the HTTP provider reads one: a host holding ``://`` is the
    URL, else ``<schema or http>://<host>[:<port>]``. Empty when the connection or its host is
    absent: the step then uses the deployment-wide ``MLOPS_SERVICE_URL``. A URL with
    credentials is refused (the token belongs in the connection's password)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return ""
    host = (connection.host or "").strip().rstrip("/")
    if not host:
        return ""
    if "://" in host:
        url = host
    else:
        url = f"{connection.schema or 'http'}://{host}"
        if connection.port:
            url = f"{url}:{connection.port}"
    return refuse_credentials_in_url(url, source=f"Airflow connection {conn_id!r} (host)")


def _connection_candidates(
    where: tuple[str, str] | Sequence[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    """One (conn_id, field) pair, or several in order, as a tuple of pairs."""
    if len(where) == 2 and isinstance(where[0], str) and isinstance(where[1], str):
        return ((where[0], where[1]),)
    return tuple((str(pair[0]), str(pair[1])) for pair in where)


def first_connection_field(
    candidates: Sequence[tuple[str, str]],
    read: dict[str, Any] | None = None,
) -> tuple[str, str, str] | None:
    """(conn_id, field, value) from the first of ``candidates`` whose connection exists; None
    when none exists or the first existing one lacks the field (no fall-through: a model's
    own connection without a token must not pick up the deployment-wide one).

    ``read``: connections already read by this task (conn_id -> connection, None when absent),
    filled as it reads, so several secrets of one connection cost one lookup."""
    read = {} if read is None else read
    for conn_id, field in candidates:
        if conn_id not in read:
            read[conn_id] = _connection_or_none(conn_id)
        connection = read[conn_id]
        if connection is None:
            continue
        value = _field_of(connection, field)
        return (conn_id, field, value) if value else None
    return None


def connection_field(conn_id: str, field: str) -> str | None:
    """``login``, ``password``, ``host`` or ``extra.<key>`` of an Airflow connection; None when
    the connection or the field is absent (every step secret is optional)."""
    connection = _connection_or_none(conn_id)
    return None if connection is None else _field_of(connection, field)


def _connection_or_none(conn_id: str) -> Any:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _field_of(connection: Any, field: str) -> str | None:
    if field.startswith("extra."):
        value = connection.extra_dejson.get(field.removeprefix("extra."))
    else:
        value = getattr(connection, field, None)
    return str(value) if value not in (None, "") else None
