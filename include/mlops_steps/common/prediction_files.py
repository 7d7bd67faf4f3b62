"""One prediction log file read into the columns a reader asked for, whatever its format.

The service writes JSON lines or Parquet (``serving/mlops_serving/predlog.py``); both carry the
same fields. A file read here gives one Arrow column per requested field, already cut to the
window's served rows (shadow copies left out) and typed the same way for both formats: numbers
float64, categories dictionary strings, booleans bool, ``timestamp`` UTC, ids and versions
strings. A feature a file does not carry comes back all null and is not in ``present``.

Parquet is read column by column (only the requested ones), row groups outside the window are
skipped by their timestamp statistics. A JSON lines file is parsed whole (its last line may be
half written: reading stops at the last newline).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mlops_steps.common.window import FeatureKind, SchemaMismatch, Window

#: The service's shadow copies (serving/mlops_serving/shadow.py): logged, never served.
SHADOW_VARIANT = "shadow"
#: Top-level fields every logged prediction carries, and their types here.
META_TYPES: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "row": pa.int64(),
    "entity_id": pa.string(),
    "timestamp": pa.timestamp("ns", tz="UTC"),
    "variant": pa.string(),
    "model_version": pa.string(),
    "score": pa.float64(),
    "class": pa.string(),
}
_REQUIRED_META = ("timestamp", "model_version", "score", "features")
_BLOCK_SIZE = 64 << 20  # one inference block for files up to 64 MB: types are judged file-wide
_TYPE_CHANGE = re.compile(r"Column\(/features/([^)]+)\) changed from (\w+) to (\w+)")
SPEC_FIX = (
    "the log must come from a service serving this model (same feature spec); "
    "check SERVING_MODEL_NAME and MLOPS_PREDICTION_LOG"
)
_FORMAT_FIX = "the prediction log format is serving/mlops_serving/predlog.py's"


@dataclass(frozen=True)
class LogFile:
    """A log file or object: its name (path or s3:// URI), how to get its bytes, its format,
    and its path when it is local (Parquet is then read in place, only the columns needed)."""

    name: str
    read: Callable[[], bytes]
    format: str = "jsonl"  # jsonl | parquet
    path: Path | None = None


@dataclass
class FileRows:
    """One file's rows in the window: a column per requested field, the features it carries,
    and the rows per (variant, model_version)."""

    columns: dict[str, list[pa.Array]]  # chunks
    present: set[str]
    rows: int
    by_version: dict[tuple[str, str], int] = field(default_factory=dict)


def feature_type(spec: FeatureKind) -> pa.DataType:
    if spec.numeric:
        return pa.float64()
    if spec.boolean:
        return pa.bool_()
    return pa.dictionary(pa.int32(), pa.string())


def wrong_type(name: str, column: str, spec: FeatureKind, found: str, where: str) -> SchemaMismatch:
    expected = "true or false" if spec.boolean else "a number" if spec.numeric else "a string"
    return SchemaMismatch(
        f"{where}: feature {column!r} holds {found}, expected {expected} ({spec.kind} feature)",
        subject=name,
        fix=SPEC_FIX,
    )


def _json_fits(value: Any, spec: FeatureKind) -> bool:
    """Whether a logged JSON value has the feature's kind (bools are not numbers here)."""
    if spec.boolean:
        return isinstance(value, bool) or value in (0, 1)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number == spec.numeric


def _diagnose(name: str, data: bytes, features: Mapping[str, FeatureKind]) -> SchemaMismatch:
    """Find the first line that breaks the contract, when the fast reader refused the file."""
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return SchemaMismatch(
                f"line {number} is not JSON ({exc.msg})",
                subject=name,
                fix="the log is written by the model service only; remove the foreign lines",
            )
        values = record.get("features") if isinstance(record, dict) else None
        if not isinstance(values, dict):
            return SchemaMismatch(
                f"line {number}: 'features' is not an object", subject=name, fix=SPEC_FIX
            )
        for key, value in values.items():
            spec = features.get(key)
            if spec is not None and value is not None and not _json_fits(value, spec):
                return wrong_type(name, key, spec, type(value).__name__, f"line {number}")
    return SchemaMismatch("could not be parsed as JSON lines", subject=name, fix=SPEC_FIX)


def _json_table(log_file: LogFile, features: Mapping[str, FeatureKind]) -> pa.Table | None:
    import pyarrow.json as pa_json

    data = log_file.read()
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""  # drop a partial last line being written
    if not data.strip():
        return None
    try:
        return pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE)
        )
    except pa.ArrowInvalid as exc:
        match = _TYPE_CHANGE.search(str(exc))
        if match and match[1] in features:
            raise wrong_type(
                log_file.name, match[1], features[match[1]], f"{match[2]}s and {match[3]}s", "rows"
            ) from None
        raise _diagnose(log_file.name, data, features) from None


def _timestamps(values: pa.ChunkedArray | pa.Array, name: str) -> pa.Array:
    """The ``timestamp`` column as UTC (JSON: ISO 8601 text; a time without a zone is UTC)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            values = pc.assume_timezone(values, "UTC")
        return values.cast(META_TYPES["timestamp"])
    try:
        return values.cast(META_TYPES["timestamp"])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import pandas as pd

        parsed = pd.to_datetime(
            values.to_pandas(), format="ISO8601", utc=True, errors="coerce"
        ).astype("datetime64[ns, UTC]")
        if parsed.isna().any():
            raise SchemaMismatch(
                f"{int(parsed.isna().sum())} lines have no valid ISO 8601 timestamp",
                subject=name,
                fix=_FORMAT_FIX,
            ) from None
        return pa.array(parsed)


def _feature(values: pa.Array, spec: FeatureKind, name: str, column: str) -> pa.Array:
    """A logged feature column as its kind's type, or a named error."""
    kind = values.type
    if pa.types.is_null(kind):
        return pa.nulls(len(values), feature_type(spec))
    if spec.numeric and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return values.cast(pa.float64())
    if spec.boolean and pa.types.is_boolean(kind):
        return values
    if spec.boolean and pa.types.is_integer(kind):
        valid = values.drop_null()
        if not len(valid) or pc.all(pc.is_in(valid, value_set=pa.array([0, 1], kind))).as_py():
            return values.cast(pa.bool_())
        raise wrong_type(name, column, spec, f"{kind} other than 0 and 1", "rows")
    if not spec.numeric and not spec.boolean:
        if pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type):
            return values.cast(feature_type(spec))
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.dictionary_encode(values).cast(feature_type(spec))
    raise wrong_type(name, column, spec, str(kind), "rows")


def _struct_names(kind: pa.DataType) -> list[str]:
    return [kind.field(i).name for i in range(kind.num_fields)]


def _check_present(name: str, present: Sequence[str], features: Mapping[str, FeatureKind]) -> None:
    extra = sorted(set(present) - set(features))
    if extra:
        raise SchemaMismatch(
            f"logged features {extra} are not in the champion's feature spec",
            subject=name,
            fix=SPEC_FIX,
        )


def _window_mask(table: pa.Table, stamps: pa.Array, window: Window) -> pa.Array:
    start = pa.scalar(window.start, META_TYPES["timestamp"])
    end = pa.scalar(window.end, META_TYPES["timestamp"])
    keep = pc.fill_null(pc.and_(pc.greater_equal(stamps, start), pc.less(stamps, end)), False)
    if "variant" in table.column_names:  # shadow copies were scored, but nobody was served them
        served = pc.fill_null(pc.not_equal(table.column("variant"), SHADOW_VARIANT), True)
        keep = pc.and_(keep, served)
    return keep


@dataclass(frozen=True)
class _Ask:
    """What a reader asks of every file: the window, features, top-level fields, version."""

    window: Window
    features: Mapping[str, FeatureKind]
    meta: Sequence[str]
    only_version: str | None


def _rows_of(log_file: LogFile, table: pa.Table, ask: _Ask, present: list[str]) -> FileRows:
    """The requested columns of the table's window rows (``features`` a struct column)."""
    missing = [n for n in _REQUIRED_META if n not in table.column_names]
    if missing:
        raise SchemaMismatch(
            f"lines lack {', '.join(missing)}", subject=log_file.name, fix=_FORMAT_FIX
        )
    window, features, meta, only_version = ask.window, ask.features, ask.meta, ask.only_version
    stamps = _timestamps(table.column("timestamp"), log_file.name)
    keep = _window_mask(table, stamps, window)
    versions = table.column("model_version").cast(pa.string())
    variants = (
        table.column("variant").cast(pa.string())
        if "variant" in table.column_names
        else pa.nulls(table.num_rows, pa.string())
    )
    counted = pa.table({"variant": variants, "version": versions}).filter(keep)
    by_version = {
        (r["variant"] if r["variant"] is not None else "?", str(r["version"])): r["count_all"]
        for r in counted.group_by(["variant", "version"]).aggregate([([], "count_all")]).to_pylist()
    }
    if only_version is not None:
        keep = pc.and_(keep, pc.fill_null(pc.equal(versions, only_version), False))
    rows = pc.sum(keep.cast(pa.int64())).as_py() or 0
    everything = rows == table.num_rows
    columns: dict[str, list[pa.Array]] = {}
    for name in meta:
        if name == "timestamp":
            values: Any = stamps
        elif name in table.column_names:
            values = table.column(name)
        else:
            values = pa.nulls(table.num_rows, META_TYPES[name])
        values = values if everything else pc.filter(values, keep)
        columns[name] = [values.cast(META_TYPES[name])]
    struct = table.column("features")
    struct = struct.combine_chunks() if isinstance(struct, pa.ChunkedArray) else struct
    if not pa.types.is_struct(struct.type):
        raise SchemaMismatch(
            f"'features' is {struct.type}, expected an object of feature values",
            subject=log_file.name,
            fix=SPEC_FIX,
        )
    _check_present(log_file.name, present, features)
    for name, spec in features.items():
        if name in _struct_names(struct.type):
            child = struct.field(name)
            child = child if everything else pc.filter(child, keep)
            columns[f"features.{name}"] = [_feature(child, spec, log_file.name, name)]
        else:
            columns[f"features.{name}"] = [pa.nulls(rows, feature_type(spec))]
    return FileRows(columns, set(present) if rows else set(), rows, by_version)


def _parquet_tables(
    log_file: LogFile,
    window: Window,
    features: Mapping[str, FeatureKind],
    meta: Sequence[str],
) -> tuple[list[pa.Table], list[str]]:
    """The file's row groups that may hold window rows, only the columns needed, a table per
    row group (Arrow cannot give a struct's dictionary fields of several groups at once)."""
    import pyarrow.parquet as pq

    try:
        source: Any = (
            log_file.path if log_file.path is not None else pa.BufferReader(log_file.read())
        )
        parquet = pq.ParquetFile(source, read_dictionary=_dictionary_paths(features))
        schema = parquet.schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaMismatch(
            f"is not a readable Parquet file ({exc})", subject=log_file.name, fix=_FORMAT_FIX
        ) from None
    names = schema.names
    if "features" not in names or not pa.types.is_struct(schema.field("features").type):
        raise SchemaMismatch(
            "has no 'features' struct column", subject=log_file.name, fix=_FORMAT_FIX
        )
    present = _struct_names(schema.field("features").type)
    _check_present(log_file.name, present, features)
    wanted = {"timestamp", "model_version", "score", "variant", *meta}
    columns = [n for n in names if n in wanted]
    columns += [f"features.{n}" for n in present if n in features]
    tables = []
    for group in _groups_in_window(parquet, window):
        table = parquet.read_row_group(group, columns=columns, use_threads=True)
        if not present:  # a struct with no field selected is not read at all
            empty = pa.array([{}] * table.num_rows, pa.struct([]))
            table = table.append_column("features", empty)
        tables.append(table)
    return tables, present


def _dictionary_paths(features: Mapping[str, FeatureKind]) -> list[str]:
    """Category columns come back dictionary-encoded (cheap categoricals)."""
    paths = ["variant", "model_version"]
    paths += [f"features.{n}" for n, s in features.items() if not (s.numeric or s.boolean)]
    return paths


def _groups_in_window(parquet: Any, window: Window) -> list[int]:
    """Row groups whose timestamp statistics overlap the window (all, without statistics)."""
    metadata = parquet.metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if "timestamp" not in names:
        return list(range(metadata.num_row_groups))
    index = names.index("timestamp")
    start, end = window.start.astimezone(dt.UTC), window.end.astimezone(dt.UTC)
    groups = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max:
            groups.append(group)
            continue
        low, high = _aware(stats.min), _aware(stats.max)
        if high >= start and low < end:
            groups.append(group)
    return groups


def _aware(value: Any) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def read_file(
    log_file: LogFile,
    window: Window,
    features: Mapping[str, FeatureKind],
    meta: Sequence[str],
    only_version: str | None = None,
) -> FileRows | None:
    """The window rows of one file (None: nothing readable in it yet)."""
    ask = _Ask(window, features, meta, only_version)
    if log_file.format != "parquet":
        table = _json_table(log_file, features)
        if table is None:
            return None
        kind = table.schema.field("features").type if "features" in table.column_names else None
        present = _struct_names(kind) if kind is not None and pa.types.is_struct(kind) else []
        return _rows_of(log_file, table, ask, present)
    tables, present = _parquet_tables(log_file, window, features, meta)
    if not tables:
        return None
    parts = [_rows_of(log_file, table, ask, present) for table in tables]
    by_version: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, count in part.by_version.items():
            by_version[key] = by_version.get(key, 0) + count
    return FileRows(
        columns={
            name: [c for part in parts for c in part.columns[name]] for name in parts[0].columns
        },
        present=set().union(*(part.present for part in parts)),
        rows=sum(part.rows for part in parts),
        by_version=by_version,
    )
