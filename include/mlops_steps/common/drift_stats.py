"""Evidently's per-column drift tests on every row, computed from sorted values and counts.

Evidently's own implementations handle 10M rows slowly: the default numeric test (normed
Wasserstein) argsorts and merge-sorts both sides; binning builds a Python list of every value
(``np.histogram_bin_edges(list(ref) + list(cur))``) and the default method choice hashes both
sides (``pd.concat(...).nunique()``). Here each side is sorted once (numbers) or counted once
(categories), and every test is computed from that with Evidently's formulas:

* ``wasserstein``: the exact 1-D Wasserstein distance (the integral of the difference of the
  quantile functions, in one pass over the sorted sides) over ``max(std(reference), 0.001)``;
* ``psi``, ``jensenshannon``, ``kl_div``: Evidently's binning (Sturges bins over both sides when
  the reference has more than 20 distinct numbers, else one bin per value) with exact counts,
  its zero filling, then its formulas (scipy's ``jensenshannon`` and ``entropy``);
* ``chisquare``: scipy's ``chisquare`` on the counts, as Evidently builds them;
* the default choice (no method given): Evidently's rule (Wasserstein / Jensen-Shannon above
  1,000 reference rows, K-S / chi-square / Z below) from the counted distinct values.

Scores equal Evidently's up to floating-point summation order (the tests compare them on real
and synthetic data). Other methods (``ks``, ``hellinger``, ``TVD``, ...) are not computed here:
:func:`fast_test` returns None and the caller runs Evidently's own test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

#: Methods computed here (by the registry name Evidently gives them).
FAST_METHODS = frozenset({"wasserstein", "psi", "jensenshannon", "kl_div", "chisquare"})
_BINNED = frozenset({"psi", "jensenshannon", "kl_div"})
_MANY_VALUES = 20  # Evidently bins a number column by value up to this many distinct values
_SMALL_REFERENCE = 1000  # Evidently's default tests switch at this many reference rows
_CHUNK = 1 << 20


@dataclass
class Side:
    """One side of one column, missing and infinite values dropped: numbers sorted (and their
    standard deviation, in the original order, as ``np.std`` gives it), categories counted."""

    numeric: bool
    size: int
    sorted: np.ndarray | None = None  # numbers
    std: float = 0.0
    labels: np.ndarray | None = None  # categories: the values present ...
    label_counts: np.ndarray | None = None  # ... and how often

    @classmethod
    def of(cls, series: pd.Series, numeric: bool) -> Side:
        if numeric:
            values = series.to_numpy(dtype="float64", na_value=np.nan)
            finite = np.isfinite(values)
            if not finite.all():
                values = values[finite]
            std = float(np.std(values)) if len(values) else 0.0
            return cls(True, len(values), sorted=np.sort(values), std=std)
        if isinstance(series.dtype, pd.CategoricalDtype):
            codes = series.cat.codes.to_numpy()
            counts = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories))
            present = counts > 0
            labels = np.asarray(series.cat.categories, dtype=object)[present]
            return cls(False, int(counts.sum()), labels=labels, label_counts=counts[present])
        counted = series.value_counts(dropna=True)
        return cls(
            False,
            int(counted.sum()),
            labels=counted.index.to_numpy(dtype=object),
            label_counts=counted.to_numpy(dtype="int64"),
        )

    @cached_property
    def distinct(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct values and how often each occurs."""
        if not self.numeric:
            assert self.labels is not None and self.label_counts is not None
            return self.labels, self.label_counts
        assert self.sorted is not None
        if not len(self.sorted):
            return self.sorted, np.zeros(0, dtype="int64")
        starts = np.concatenate(([0], np.flatnonzero(np.diff(self.sorted)) + 1))
        counts = np.diff(np.append(starts, len(self.sorted)))
        return self.sorted[starts], counts


def _union_nunique(reference: Side, current: Side) -> int:
    """Distinct values of both sides together (exact only up to 6: all the rule needs)."""
    ref_values, cur_values = reference.distinct[0], current.distinct[0]
    if len(ref_values) > 5 or len(cur_values) > 5:
        return max(len(ref_values), len(cur_values))
    return len(set(ref_values.tolist()) | set(cur_values.tolist()))


def default_method(reference: Side, current: Side) -> str:
    """The test Evidently picks when none is given (its ``_get_default_stattest``)."""
    values = _union_nunique(reference, current)
    if reference.size <= _SMALL_REFERENCE:
        if reference.numeric and values > 5:
            return "ks"
        return "chisquare" if values > 2 else "z"
    if reference.numeric:
        return "wasserstein" if values > 5 else "jensenshannon"
    return "jensenshannon"


def wasserstein(x: np.ndarray, y: np.ndarray) -> float:
    """The 1-D Wasserstein distance of two sorted samples: the integral over t in (0, 1] of
    |Qx(t) - Qy(t)|. In units of 1/(n m), y's j-th step is (j n, (j+1) n] and holds at most one
    of x's steps (every m) when n <= m, so each j adds one or two rectangles."""
    if len(x) > len(y):
        x, y = y, x
    n, m = len(x), len(y)
    total = 0.0
    for low in range(0, m, _CHUNK):
        j = np.arange(low, min(low + _CHUNK, m), dtype=np.int64)
        start = j * n
        first = start // m  # x's index just after the step starts
        last = ((j + 1) * n + m - 1) // m - 1  # x's index at its end
        split = last * m  # where x moves to ``last`` (if it does within the step)
        width = np.where(last > first, split - start, n).astype(np.float64)
        values = y[low : low + len(j)]
        total += float(np.sum(width * np.abs(x[first] - values)))
        total += float(np.sum((n - width) * np.abs(x[last] - values)))
    return total / n / m


def sturges_edges(low: float, high: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(data, bins="sturges")`` from the data's min, max and size."""
    first, last = np.float64(low), np.float64(high)
    width = (last - first) / (np.log2(size) + 1.0)
    if first == last:
        first, last = first - 0.5, last + 0.5
    bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, bins + 1, endpoint=True, dtype=np.float64)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(values, edges)[0]`` of sorted values (the last bin is closed)."""
    cumulative = np.concatenate(
        (np.searchsorted(values, edges[:-1], "left"), np.searchsorted(values, edges[-1:], "right"))
    )
    return np.diff(cumulative)


def _by_value(reference: Side, current: Side) -> tuple[np.ndarray, np.ndarray]:
    """Counts per value present on either side, in one order for both."""
    ref_values, ref_counts = reference.distinct
    cur_values, cur_counts = current.distinct
    keys = list(dict.fromkeys([*ref_values.tolist(), *cur_values.tolist()]))
    ref = dict(zip(ref_values.tolist(), ref_counts.tolist(), strict=True))
    cur = dict(zip(cur_values.tolist(), cur_counts.tolist(), strict=True))
    return (
        np.array([ref.get(k, 0) for k in keys], dtype=np.float64),
        np.array([cur.get(k, 0) for k in keys], dtype=np.float64),
    )


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """Evidently's ``feel_zeroes``: empty bins get a share far below the smallest other."""
    smallest = min(percents[percents != 0])
    np.place(percents, percents == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return percents


def binned(reference: Side, current: Side, fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data``: each side's share per bin (or per value)."""
    if reference.numeric and len(reference.distinct[0]) > _MANY_VALUES:
        assert reference.sorted is not None and current.sorted is not None
        low = min(reference.sorted[0], current.sorted[0]) if current.size else reference.sorted[0]
        high = (
            max(reference.sorted[-1], current.sorted[-1]) if current.size else reference.sorted[-1]
        )
        edges = sturges_edges(low, high, reference.size + current.size)
        ref = _histogram(reference.sorted, edges) / reference.size
        cur = _histogram(current.sorted, edges) / current.size
    else:
        ref_counts, cur_counts = _by_value(reference, current)
        ref, cur = ref_counts / reference.size, cur_counts / current.size
    if fill_zeroes:
        ref, cur = _fill_zeroes(ref), _fill_zeroes(cur)
    return ref, cur


def fast_test(method: str, reference: Side, current: Side, threshold: float) -> Any:
    """(score, drifted) of ``method`` as Evidently computes it, or None: not computed here."""
    from scipy import stats
    from scipy.spatial import distance

    if method == "wasserstein" and reference.numeric:
        assert reference.sorted is not None and current.sorted is not None
        norm = max(reference.std, 0.001)
        score = wasserstein(reference.sorted, current.sorted) / norm
        return score, score >= threshold
    if method in _BINNED:
        ref, cur = binned(reference, current, fill_zeroes=method != "jensenshannon")
        if method == "psi":
            score = float(np.sum((ref - cur) * np.log(ref / cur)))
        elif method == "jensenshannon":
            score = float(distance.jensenshannon(ref, cur))
        else:
            score = float(stats.entropy(ref, cur))
        return score, score >= threshold
    if method == "chisquare":
        ref_counts, cur_counts = _by_value(reference, current)
        expected = ref_counts * (current.size / reference.size)
        p_value = float(stats.chisquare(cur_counts, expected)[1])
        return p_value, p_value < threshold
    return None
