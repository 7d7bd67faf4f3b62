"""Apply ``airflow_settings.yaml`` (the Astro CLI format) to a local Airflow.

What ``astro dev start`` does for an Astro project, for the embedded default: connections and pools
go into the metadata database (created when missing; existing ones, e.g. edited in the UI, are left
alone unless ``--overwrite``), with a one-slot promotion pool for every model in the models
directory the file does not list (a model added later needs no edit here), variables become
``AIRFLOW_VAR_<NAME>`` environment entries of the Airflow processes, because the DAGs read them
while they are parsed (see the file's comments).

Usage: ``python scripts/airflow_settings.py [--file airflow_settings.yaml] [--overwrite]`` inside
an Airflow environment (``AIRFLOW_HOME`` set); ``make up`` and ``make demo`` call :func:`apply`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETTINGS_FILE = REPO / "airflow_settings.yaml"
_CONNECTION_FIELDS = ("conn_type", "conn_host", "conn_schema", "conn_login", "conn_password",
                      "conn_port", "conn_extra")  # fmt: skip


class SettingsFileError(ValueError):
    """The file is not valid Astro ``airflow_settings.yaml``; the message names the entry."""


@dataclass(frozen=True)
class Connection:
    conn_id: str
    conn_type: str
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pool:
    name: str
    slots: int
    description: str = ""


@dataclass(frozen=True)
class AirflowSettings:
    connections: tuple[Connection, ...]
    pools: tuple[Pool, ...]
    variables: dict[str, str]

    def variables_env(self) -> dict[str, str]:
        """The variables as Airflow reads them from the environment."""
        return {f"AIRFLOW_VAR_{name.upper()}": value for name, value in self.variables.items()}


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _connection(entry: Any, where: str) -> Connection:
    if not isinstance(entry, dict) or not entry.get("conn_id"):
        raise SettingsFileError(f"{where}: every connection needs a conn_id")
    conn_id = str(entry["conn_id"])
    unknown = set(entry) - {"conn_id", *_CONNECTION_FIELDS}
    if unknown:
        raise SettingsFileError(
            f"{where} ({conn_id}): unknown key(s) {sorted(unknown)}; the keys are "
            f"conn_id, {', '.join(_CONNECTION_FIELDS)}"
        )
    if not entry.get("conn_type"):
        raise SettingsFileError(f"{where} ({conn_id}): conn_type is required (e.g. http)")
    extra = entry.get("conn_extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise SettingsFileError(f"{where} ({conn_id}): conn_extra is not JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise SettingsFileError(f"{where} ({conn_id}): conn_extra must be a mapping")
    port = entry.get("conn_port")
    if port not in (None, "") and not str(port).isdigit():
        raise SettingsFileError(f"{where} ({conn_id}): conn_port {port!r} is not a port number")
    return Connection(
        conn_id=conn_id,
        conn_type=str(entry["conn_type"]),
        host=_text(entry.get("conn_host")),
        schema=_text(entry.get("conn_schema")),
        login=_text(entry.get("conn_login")),
        password=_text(entry.get("conn_password")),
        port=int(port) if port not in (None, "") else None,
        extra=extra,
    )


def _pool(entry: Any, where: str) -> Pool:
    if not isinstance(entry, dict) or not entry.get("pool_name"):
        raise SettingsFileError(f"{where}: every pool needs a pool_name")
    slots = entry.get("pool_slot")
    if not isinstance(slots, int) or slots < 1:
        raise SettingsFileError(
            f"{where} ({entry['pool_name']}): pool_slot must be an integer >= 1"
        )
    return Pool(str(entry["pool_name"]), slots, str(entry.get("pool_description") or ""))


def load(path: Path = SETTINGS_FILE) -> AirflowSettings:
    """Parse and check the file (no Airflow import)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsFileError(f"{path}: not YAML: {exc}") from None
    airflow = document.get("airflow") if isinstance(document, dict) else None
    if not isinstance(airflow, dict):
        raise SettingsFileError(f"{path}: expected a top-level 'airflow:' mapping")
    connections = tuple(
        _connection(entry, f"{path.name}: airflow.connections[{i}]")
        for i, entry in enumerate(airflow.get("connections") or [])
    )
    pools = tuple(
        _pool(entry, f"{path.name}: airflow.pools[{i}]")
        for i, entry in enumerate(airflow.get("pools") or [])
    )
    variables: dict[str, str] = {}
    for i, entry in enumerate(airflow.get("variables") or []):
        if not isinstance(entry, dict) or not entry.get("variable_name"):
            raise SettingsFileError(f"{path.name}: airflow.variables[{i}] needs a variable_name")
        value = entry.get("variable_value")
        variables[str(entry["variable_name"])] = "" if value is None else str(value)
    for kind, names in (("conn_id", [c.conn_id for c in connections]),
                        ("pool_name", [p.name for p in pools])):  # fmt: skip
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SettingsFileError(f"{path.name}: duplicate {kind}(s) {duplicates}")
    return AirflowSettings(connections, pools + model_pools(pools), variables)


def model_pools(declared: tuple[Pool, ...] = ()) -> tuple[Pool, ...]:
    """The promotion pool of every model in the models directory that the file does not
    declare (one slot: a model's releases and rollbacks never interleave), named as the DAG
    factory names it (``mlops_promotion__<model>``, or ``MLOPS_PROMOTION_POOL``)."""
    from mlops_steps.contract.loader import model_names
    from mlops_steps.core.settings import load_settings

    settings, known = load_settings(), {pool.name for pool in declared}
    pools = {settings.for_model(name).deploy.promotion_pool: name for name in model_names()}
    return tuple(
        Pool(pool, 1, f"One release (or rollback) of model {name} at a time")
        for pool, name in sorted(pools.items())
        if pool not in known
    )


def apply(settings: AirflowSettings, *, overwrite: bool = False) -> list[str]:
    """Create the connections and pools in the metadata database of ``$AIRFLOW_HOME``; returns
    one line per entry saying what happened. Runs in-process (one Airflow import, not one CLI
    process per entry)."""
    # The metadata-database models (airflow.sdk's Connection is the task-side view).
    from airflow.models.connection import Connection as AirflowConnection
    from airflow.models.pool import Pool as AirflowPool
    from airflow.utils.session import create_session

    report: list[str] = []
    with create_session() as session:
        for conn in settings.connections:
            existing = session.query(AirflowConnection).filter_by(conn_id=conn.conn_id).first()
            if existing is not None and not overwrite:
                report.append(f"connection {conn.conn_id}: kept (already set)")
                continue
            if existing is not None:
                session.delete(existing)
                session.flush()
            session.add(
                AirflowConnection(
                    conn_id=conn.conn_id,
                    conn_type=conn.conn_type,
                    host=conn.host,
                    schema=conn.schema,
                    login=conn.login,
                    password=conn.password,
                    port=conn.port,
                    extra=json.dumps(conn.extra) if conn.extra else None,
                )
            )
            report.append(f"connection {conn.conn_id}: {'replaced' if existing else 'created'}")
        for pool in settings.pools:
            existing_pool = session.query(AirflowPool).filter_by(pool=pool.name).first()
            if existing_pool is not None and not overwrite:
                report.append(f"pool {pool.name}: kept ({existing_pool.slots} slots)")
                continue
            AirflowPool.create_or_update_pool(
                name=pool.name,
                slots=pool.slots,
                description=pool.description,
                include_deferred=False,
                session=session,
            )
            report.append(f"pool {pool.name}: {pool.slots} slot(s)")
    if settings.variables:
        report.append(
            f"variables {', '.join(settings.variables)}: as AIRFLOW_VAR_* in the environment of "
            "the Airflow processes (read at parse time)"
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=SETTINGS_FILE)
    parser.add_argument("--overwrite", action="store_true", help="replace existing entries")
    args = parser.parse_args(argv)
    try:
        settings = load(args.file)
    except (SettingsFileError, OSError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    for line in apply(settings, overwrite=args.overwrite):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
