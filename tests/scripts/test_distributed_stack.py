"""The distributed stack's refusals, before it starts anything (scripts/distributed_stack.py):
a service it needs that is down is named with the command that starts it, never skipped; and it
only ever creates or drops databases of its own. The stack itself runs live in
tests/e2e/test_distributed_lifecycle.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import distributed_stack
from distributed_stack import DistributedStack, PostgresDatabases, ServiceDown


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_redis_down_is_named_with_its_start_command_before_anything_starts(
    refused_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(distributed_stack, "REDIS_PORT", refused_port)
    with pytest.raises(ServiceDown) as refused:
        DistributedStack.start(tmp_path)
    message = str(refused.value)
    assert f"Redis is not reachable on 127.0.0.1:{refused_port}" in message
    assert "`service redis-server start`" in message
    assert "PostgreSQL" not in message  # the one that is up is not blamed
    assert list(tmp_path.iterdir()) == []  # no database, no key, no process, no log folder


def test_both_down_are_named_in_one_message(
    refused_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed_stack, "REDIS_PORT", refused_port)
    monkeypatch.setattr(distributed_stack, "PG_PORT", refused_port)
    with pytest.raises(ServiceDown) as refused:
        distributed_stack.require_services()
    message = str(refused.value)
    assert f"PostgreSQL is not reachable on 127.0.0.1:{refused_port}" in message
    assert "`pg_ctlcluster 15 main start`" in message
    assert "`service redis-server start`" in message


@pytest.mark.parametrize(
    "name", ["postgres", "test", "root", "mlops_airflow", "mlops_airflow_0123abc"]
)
def test_a_database_not_named_as_a_stacks_own_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=f"not a database of a distributed stack: '{name}'"):
        PostgresDatabases().url(name)


@pytest.mark.parametrize(
    ("purpose", "suffix"),
    [("airflow", 'x"; DROP DATABASE postgres; --'), ("Airflow", "0123abcd"), ("mlflow", "0123")],
)
def test_create_refuses_a_name_before_it_connects(
    purpose: str, suffix: str, refused_port: int
) -> None:
    # On a refused port a connection attempt would be psycopg2's OperationalError instead.
    with pytest.raises(ValueError, match="not a database of a distributed stack"):
        PostgresDatabases(port=refused_port).create(purpose, suffix)
