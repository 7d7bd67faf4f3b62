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
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMBER_TYPES = (int, float)
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
    name: str
    kind: str  # "integer" | "float" | "category"
    vocabulary: dict[str, float] | None = None

    def schema(self) -> dict[str, Any]:
        if self.vocabulary is not None:
            return {"type": "string", "enum": list(self.vocabulary)}
        return {"type": "integer" if self.kind == "integer" else "number"}


class FeatureCodec:
    """Validates feature records and encodes them as the booster's float matrix."""

    def __init__(self, fields: list[FieldSpec]) -> None:
        self.fields = fields
        self.names = [f.name for f in fields]
        self._known = frozenset(self.names)
        self._getter = operator.itemgetter(*self.names)
        # (name, vocabulary or None, whether an integer) per field: one tuple unpack per value.
        self._plan = [(f.name, f.vocabulary, f.kind == "integer") for f in fields]

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {f.name: f.schema() for f in self.fields},
            "required": self.names,
            "additionalProperties": False,
        }

    def _check_value(self, spec: FieldSpec, value: Any, loc: list[Any]) -> float | dict[str, Any]:
        if spec.vocabulary is not None:
            if type(value) is not str:
                return _error(loc, "Input should be a valid string", "string_type")
            code = spec.vocabulary.get(value)
            if code is None:
                return _error(
                    loc,
                    f"Unknown category {value!r}; expected one of {list(spec.vocabulary)}",
                    "enum",
                    expected=list(spec.vocabulary),
                )
            return code
        if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
            expected = "an integer" if spec.kind == "integer" else "a number"
            return _error(loc, f"Input should be {expected}", f"{spec.kind}_type")
        if spec.kind == "integer" and not float(value).is_integer():
            return _error(loc, "Input should be an integer", "integer_type")
        return float(value)

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

    def encode_one(self, record: Any, loc: list[Any]) -> list[float]:
        """One record -> its feature values in the booster's order (the single-row fast path)."""
        if type(record) is dict and len(record) == len(self._plan):
            values: list[float] = []
            append = values.append
            try:
                for name, vocabulary, integer in self._plan:
                    value = record[name]
                    if vocabulary is not None:
                        append(vocabulary[value])  # str keys only: nothing else matches
                    elif type(value) is int or (
                        type(value) is float
                        and math.isfinite(value)
                        and (not integer or value.is_integer())
                    ):
                        append(float(value))  # OverflowError for ints beyond float range
                    else:
                        raise TypeError
            except (KeyError, TypeError, OverflowError):
                pass
            else:
                return values
        raise InvalidInput(self._row_errors(record, loc) or [_error(loc, "Invalid", "value")])

    def encode_many(self, records: list[Any], loc: list[Any]) -> np.ndarray:
        """Many records -> an (m, n) float64 matrix; errors name the row.

        The fast path does C-level work per column (itemgetter, zip, map) and only falls back
        to checking record by record, to report errors, when something is off. A category
        column needs no type check: the vocabulary's keys are strings, and no other JSON value
        equals a string (an unhashable one raises TypeError, an unknown one KeyError).
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
                if not set(map(type, column)) <= _NUMBER_TYPE_SET:  # bools excluded
                    raise TypeError
                values = np.fromiter(column, np.float64, rows)
                if not np.isfinite(values).all() or (
                    spec.kind == "integer" and (values != np.floor(values)).any()
                ):
                    raise TypeError
                matrix[:, i] = values
        except (KeyError, TypeError, ValueError, OverflowError):
            errors: list[dict[str, Any]] = []
            for index, record in enumerate(records):
                errors += self._row_errors(record, [*loc, index])
                if len(errors) >= _MAX_REPORTED_ERRORS:
                    break
            raise InvalidInput(errors[:_MAX_REPORTED_ERRORS]) from None
        return matrix

    def smoke_row(self) -> np.ndarray:
        """A valid row (first category, zero) for a load-time smoke prediction."""
        return np.asarray([[0.0 for _ in self.fields]])
