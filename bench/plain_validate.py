"""The plain pass bench/bench_validate.py times the validate step against: the contract's checks
(and the shift against a champion's partition) as a person would write them with pandas, numpy
and scipy, over every row. The tests check that it decides every check as the step does."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from mlops_steps.common.metrics import ROW_ID_COLUMN


def _is_text(values: Any) -> bool:
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        used = dtype.categories[pd.unique(values.cat.codes[values.cat.codes >= 0])]
        return pd.api.types.infer_dtype(used, skipna=True) in ("string", "empty")
    if isinstance(dtype, pd.StringDtype):
        return True
    return pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(
        values, skipna=True
    ) in ("string", "empty")


def _is_number(values: Any, *, integer: bool) -> bool:
    if types.is_bool_dtype(values.dtype) or not types.is_numeric_dtype(values.dtype):
        return False
    return types.is_integer_dtype(values.dtype) or not integer


def _outside(values: Any, low: float | None, high: float | None) -> bool:
    """Any non-null value beyond the limits (a column that is not numeric fails)."""
    if types.is_bool_dtype(values.dtype) or not types.is_numeric_dtype(values.dtype):
        return len(values.dropna()) > 0
    below = bool((values < low).any()) if low is not None else False
    return below or (bool((values > high).any()) if high is not None else False)


def plain_checks(frame: Any, contract: Any, min_rows: int) -> dict[str, bool]:
    """Each check of the contract, passed or not, named as validate names its expectations."""
    id_column = contract.id_column or ROW_ID_COLUMN
    columns = [*contract.all_columns, *(() if contract.id_column else (id_column,))]
    passed = {
        "expect_table_columns_to_match_set()": set(frame.columns) == set(columns),
        "expect_table_row_count_to_be_between()": len(frame) >= min_rows,
    }

    def check(kind: str, column: str, decide: Any) -> None:
        name = f"expect_column_values_to_{kind}({column})"
        passed[name] = column in frame.columns and bool(decide(frame[column]))

    def within(values: pd.Series, allowed: list[Any]) -> bool:
        return not bool((values.notna() & ~values.isin(allowed)).any())

    check("be_unique", id_column, lambda s: s.dropna().is_unique)
    check("be_in_type_list", id_column, _is_text)
    label = contract.label
    if contract.task == "regression":
        check("be_in_type_list", label, lambda s: _is_number(s, integer=False))
    else:
        numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in contract.classes)
        check(
            "be_in_type_list",
            label,
            lambda s: _is_number(s, integer=True) if numeric else _is_text(s),
        )
        check("be_in_set", label, lambda s: within(s, list(contract.classes)))
    nullable = {f.name for f in contract.features if f.nullable}
    for column in columns:
        if column not in nullable:
            check("not_be_null", column, lambda s: not s.isna().any())
    for feature in contract.features:
        name = feature.name
        if feature.is_category:
            check("be_in_type_list", name, _is_text)
            check("be_in_set", name, lambda s, f=feature: within(s, list(f.categories)))
        elif feature.kind == "boolean":
            check("be_in_type_list", name, lambda s: True)  # any dtype holding True/False/0/1
            check("be_in_set", name, lambda s: within(s, [True, False, 0, 1]))
        else:
            integer = feature.kind == "integer" and not feature.nullable
            check("be_in_type_list", name, lambda s, i=integer: _is_number(s, integer=i))
            if feature.minimum is not None or feature.maximum is not None:
                check(
                    "be_between",
                    name,
                    lambda s, f=feature: not _outside(s, f.minimum, f.maximum),
                )
    return passed


def plain_shift(reference: Any, current: Any, contract: Any) -> dict[str, float]:
    """The label rate's change and each feature's drift score, over every row: normed
    Wasserstein for numbers with more than 5 values, else Jensen-Shannon on value shares."""

    def shares(ref: pd.Series, cur: pd.Series) -> float:
        a, b = ref.value_counts(), cur.value_counts()
        keys = a.index.union(b.index)
        p = a.reindex(keys, fill_value=0) / len(ref)
        q = b.reindex(keys, fill_value=0) / len(cur)
        return float(jensenshannon(p.to_numpy(), q.to_numpy()))

    label = contract.label
    scores = {"label_shift": abs(float(current[label].mean()) - float(reference[label].mean()))}
    scores["label_test"] = shares(reference[label], current[label])
    for feature in contract.features:
        ref, cur = reference[feature.name].dropna(), current[feature.name].dropna()
        as_values = feature.is_category or feature.kind == "boolean"
        if as_values or pd.concat([ref, cur]).nunique() <= 5:
            scores[feature.name] = shares(ref, cur)
        else:
            spread = max(float(np.std(ref.to_numpy())), 0.001)
            scores[feature.name] = float(wasserstein_distance(ref, cur)) / spread
    return scores
