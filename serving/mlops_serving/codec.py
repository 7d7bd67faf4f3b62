"""Turning JSON requests into a model's input: validation and encoding in one pass.

Built from the feature spec and the signature the training pipeline logs with each model (see
:mod:`mlops_serving.model`), so a missing field, a wrong type or an unknown category is a 422
naming the field, and categories are encoded with the model's own vocabulary. No pandas and no
pydantic on the request path: the input schema belongs to the model version, which changes at run
time, and the encoders below are the service's measured hot path.
"""

from __future__ import annotations

import math
import operator
import sys
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

_NUMBER_TYPES = (int, float)
FLOAT_MAX = sys.float_info.max
_NUMBER_TYPE_SET = frozenset(_NUMBER_TYPES)
_MAX_REPORTED_ERRORS = 20


class InvalidInput(ValueError):
    """A request that does not match the model's input; ``errors`` is FastAPI's 422 shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def _error(loc: list[Any], msg: str, kind: str, **ctx: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind, **({"ctx": ctx} if ctx else {})}


@dataclass(frozen=True)
class FieldSpec:
    """One request field, as the model's feature spec declares it.

    Numeric fields carry the data contract's hard limits (``minimum``/``maximum``: a value beyond
    them is impossible, a 422), the declared ``expected_range`` and the ``training_range`` the
    model saw (a value outside the expected range, else the training range, is served but
    flagged). ``nullable``: null is served as a missing value (NaN) instead of a 422. A category
    outside the vocabulary is a 422 (``unseen="reject"``) or a missing value (``"missing"``).
    """

    name: str
    kind: str  # "integer" | "float" | "category" | "boolean"
    vocabulary: dict[str, float] | None = None
    minimum: float | None = None
    maximum: float | None = None
    training_range: tuple[float, float] | None = None
    expected_range: tuple[float | None, float | None] | None = None
    nullable: bool = False
    unseen: str = "reject"
    description: str = ""

    @property
    def flag_range(self) -> tuple[float, float] | None:
        """Where a served value stops being usual: the declared expected range (an open side
        is unbounded), else the training range; None: nothing is flagged."""
        if self.expected_range is not None:
            low, high = self.expected_range
            return (-math.inf if low is None else low, math.inf if high is None else high)
        return self.training_range

    def schema(self, described: bool = False) -> dict[str, Any]:
        """The field's JSON Schema: exactly what :meth:`FeatureCodec.encode_one` accepts
        (``described``: with a description of nulls, unseen values and the usual range)."""
        out: dict[str, Any]
        if self.vocabulary is not None:
            out = {"type": "string"}
            if self.unseen == "reject":
                out["enum"] = list(self.vocabulary)
            else:
                out["examples"] = list(self.vocabulary)
        elif self.kind == "boolean":
            out = {"type": "boolean"}
        else:
            # Without a hard limit, any finite double: JSON numbers beyond it are not accepted.
            out = {
                "type": "integer" if self.kind == "integer" else "number",
                "minimum": -FLOAT_MAX if self.minimum is None else self.minimum,
                "maximum": FLOAT_MAX if self.maximum is None else self.maximum,
            }
        if self.nullable:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        if not described:
            return out
        notes = [self.description] if self.description else []
        if self.vocabulary is not None and self.unseen == "missing":
            notes.append(f"one of {list(self.vocabulary)}; any other value is served as missing")
        if self.nullable:
            notes.append("null is served as a missing value")
        usual = self.flag_range
        if usual is not None and self.vocabulary is None:
            source = "expected range" if self.expected_range is not None else "training range"
            notes.append(
                f"values outside the {source} [{usual[0]:g}, {usual[1]:g}] are served and flagged"
            )
        if notes:
            out["description"] = "; ".join(notes)
        return out

    def bounds(self) -> tuple[float, float]:
        """The one range the fast paths check: the flag range if known (clamped into the
        contract's limits: a spec's word is not trusted blindly), else the contract's limits.
        A value outside it takes the slow path, which tells an impossible value from an unusual
        one. Booleans: an empty range, so only the boolean branch accepts them."""
        if self.kind == "boolean":
            return math.nan, math.nan
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        usual = self.flag_range
        if usual is not None:
            return max(low, usual[0]), min(high, usual[1])
        return low, high

    def limit_error(self, value: float, loc: list[Any]) -> dict[str, Any] | None:
        """The 422 for a value beyond the contract's limits, or None."""
        if self.minimum is not None and value < self.minimum:
            return _error(
                loc,
                f"Input should be greater than or equal to {self.minimum:g} "
                "(the data contract's minimum)",
                "greater_than_equal",
                ge=self.minimum,
            )
        if self.maximum is not None and value > self.maximum:
            return _error(
                loc,
                f"Input should be less than or equal to {self.maximum:g} "
                "(the data contract's maximum)",
                "less_than_equal",
                le=self.maximum,
            )
        return None

    def outside_usual_range(self, value: float) -> bool:
        """A served numeric value to flag (never a missing one)."""
        usual = self.flag_range
        return usual is not None and not math.isnan(value) and not usual[0] <= value <= usual[1]


def _check_category(
    spec: FieldSpec, vocabulary: dict[str, float], value: Any, loc: list[Any]
) -> float | dict[str, Any]:
    if type(value) is not str:
        return _error(loc, "Input should be a valid string", "string_type")
    code = vocabulary.get(value)
    if code is not None:
        return code
    if spec.unseen == "missing":
        return math.nan
    return _error(
        loc,
        f"Unknown category {value!r}; expected one of {list(vocabulary)}",
        "enum",
        expected=list(vocabulary),
    )


class FeatureCodec:
    """Validates feature records and encodes them as the booster's float matrix.

    Both encoders also return which numeric values lie outside their usual range (served, but
    flagged for monitoring): ``()`` / ``{}`` in the common case, at the cost of one comparison
    pair per numeric value (:meth:`FieldSpec.bounds`). Nulls, unseen categories served as
    missing and booleans take the slow path, which checks value by value.
    """

    def __init__(self, fields: list[FieldSpec]) -> None:
        self.fields = fields
        self.names = [f.name for f in fields]
        self._known = frozenset(self.names)
        self._getter = operator.itemgetter(*self.names)
        # (name, vocabulary or None, whether an integer, low, high) per field: one tuple unpack
        # per value; low/high are the fast path's bounds (ignored for categories).
        self._plan = [(f.name, f.vocabulary, f.kind == "integer", *f.bounds()) for f in fields]
        numeric = [i for i, f in enumerate(fields) if f.kind in ("integer", "float")]
        self._numeric = np.asarray(numeric, dtype=np.intp)
        self._numeric_fields = [fields[i] for i in numeric]
        self._low = np.asarray([fields[i].bounds()[0] for i in numeric], dtype=np.float64)
        self._high = np.asarray([fields[i].bounds()[1] for i in numeric], dtype=np.float64)
        self.checks_training_range = any(f.training_range is not None for f in fields)
        self.expected_ranges = [f.name for f in fields if f.expected_range is not None]

    def json_schema(self, described: bool = False) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {f.name: f.schema(described) for f in self.fields},
            "required": self.names,
            "additionalProperties": False,
        }

    def _check_value(self, spec: FieldSpec, value: Any, loc: list[Any]) -> float | dict[str, Any]:
        """The encoded value, or the error naming the field (``loc``)."""
        if value is None and spec.nullable:
            return math.nan
        if spec.vocabulary is not None:
            return _check_category(spec, spec.vocabulary, value, loc)
        if spec.kind == "boolean":
            wrong = _error(loc, "Input should be a valid boolean", "bool_type")
            return float(value) if type(value) is bool else wrong
        if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
            expected = "an integer" if spec.kind == "integer" else "a number"
            return _error(loc, f"Input should be {expected}", f"{spec.kind}_type")
        if spec.kind == "integer" and not float(value).is_integer():
            return _error(loc, "Input should be an integer", "integer_type")
        return spec.limit_error(value, loc) or float(value)

    def _row_errors(self, record: Any, loc: list[Any]) -> list[dict[str, Any]]:
        if not isinstance(record, dict):
            return [_error(loc, "Input should be an object of features", "dict_type")]
        errors = []
        for spec in self.fields:
            if spec.name not in record:
                errors.append(_error([*loc, spec.name], "Field required", "missing"))
                continue
            checked = self._check_value(spec, record[spec.name], [*loc, spec.name])
            if isinstance(checked, dict):
                errors.append(checked)
        errors += [
            _error([*loc, extra], "Unknown field", "extra_forbidden")
            for extra in sorted(set(record) - self._known)
        ]
        return errors

    def _encode_checked(self, record: dict[str, Any]) -> tuple[list[float], tuple[str, ...]]:
        """A record without errors, the slow way: values and the names to flag."""
        values = [cast(float, self._check_value(s, record[s.name], [])) for s in self.fields]
        flagged = tuple(
            s.name
            for s, value in zip(self.fields, values, strict=True)
            if s.kind in ("integer", "float") and s.outside_usual_range(value)
        )
        return values, flagged

    def encode_one(self, record: Any, loc: list[Any]) -> tuple[list[float], tuple[str, ...]]:
        """One record -> its feature values in the booster's order (the single-row fast path)
        and the names of the values outside their usual range (usually none)."""
        if type(record) is dict and len(record) == len(self._plan):
            values: list[float] = []
            append = values.append
            try:
                for name, vocabulary, integer, low, high in self._plan:
                    value = record[name]
                    if vocabulary is not None:
                        append(vocabulary[value])  # str keys only: nothing else matches
                    elif (
                        type(value) is int
                        or (
                            type(value) is float
                            and math.isfinite(value)
                            and (not integer or value.is_integer())
                        )
                    ) and low <= value <= high:
                        append(float(value))  # OverflowError for ints beyond float range
                    else:
                        raise TypeError
            except (KeyError, TypeError, OverflowError):
                pass
            else:
                return values, ()
        errors = self._row_errors(record, loc)
        if errors:
            raise InvalidInput(errors)
        # Valid, but with a null, a boolean, an unseen category or an unusual value.
        return self._encode_checked(record)

    def encode_many(
        self, records: list[Any], loc: list[Any]
    ) -> tuple[np.ndarray, dict[int, list[str]]]:
        """Many records -> an (m, n) float64 matrix, and the names of the values outside their
        usual range by row (usually none); errors name the row.

        The fast path does C-level work per column (itemgetter, zip, map) and only falls back
        to checking record by record when something is off (an error, or a null, an unseen
        category served as missing, a boolean). A category column needs no type check: the
        vocabulary's keys are strings, and no other JSON value equals a string (an unhashable
        one raises TypeError, an unknown one KeyError).
        """
        rows = len(records)
        try:
            if set(map(type, records)) != {dict} or set(map(len, records)) != {len(self.fields)}:
                raise TypeError
            columns = zip(*map(self._getter, records), strict=True)
            matrix = np.empty((rows, len(self.fields)))
            for i, (spec, column) in enumerate(zip(self.fields, columns, strict=True)):
                if spec.vocabulary is not None:
                    matrix[:, i] = np.fromiter(
                        map(spec.vocabulary.__getitem__, column), np.float64, rows
                    )
                    continue
                kinds = set(map(type, column))
                if spec.kind == "boolean":
                    if kinds != {bool}:
                        raise TypeError
                    matrix[:, i] = np.fromiter(column, np.float64, rows)
                    continue
                if not kinds <= _NUMBER_TYPE_SET:  # bools excluded
                    raise TypeError
                values = np.fromiter(column, np.float64, rows)
                if not np.isfinite(values).all() or (
                    spec.kind == "integer" and (values != np.floor(values)).any()
                ):
                    raise TypeError
                matrix[:, i] = values
            numeric = matrix[:, self._numeric]
            outside = (numeric < self._low) | (numeric > self._high)
            flagged = self._flag_rows(numeric, outside) if outside.any() else {}
        except (KeyError, TypeError, ValueError, OverflowError):
            return self._encode_many_slowly(records, loc)
        return matrix, flagged

    def _encode_many_slowly(
        self, records: list[Any], loc: list[Any]
    ) -> tuple[np.ndarray, dict[int, list[str]]]:
        errors: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            errors += self._row_errors(record, [*loc, index])
            if len(errors) >= _MAX_REPORTED_ERRORS:
                break
        if errors:
            raise InvalidInput(errors[:_MAX_REPORTED_ERRORS])
        matrix = np.empty((len(records), len(self.fields)))
        flagged: dict[int, list[str]] = {}
        for index, record in enumerate(records):
            values, names = self._encode_checked(record)
            matrix[index] = values
            if names:
                flagged[index] = list(names)
        return matrix, flagged

    def _flag_rows(self, numeric: np.ndarray, outside: np.ndarray) -> dict[int, list[str]]:
        """Rows with values outside the fast path's bounds: ValueError if any is beyond the
        contract's limits (the caller then reports the errors), else the flagged names by row."""
        flagged: dict[int, list[str]] = {}
        for column in np.flatnonzero(outside.any(axis=0)).tolist():
            spec = self._numeric_fields[column]
            for row in np.flatnonzero(outside[:, column]).tolist():
                value = float(numeric[row, column])
                if spec.limit_error(value, []) is not None:
                    raise ValueError(spec.name)
                if spec.outside_usual_range(value):
                    flagged.setdefault(row, []).append(spec.name)
        return flagged

    def smoke_row(self) -> np.ndarray:
        """A valid row (first category, zero) for a load-time smoke prediction."""
        return np.asarray([[0.0 for _ in self.fields]])
