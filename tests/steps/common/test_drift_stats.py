"""The drift tests computed from sorted values and counts score and decide as Evidently's own
implementations do, on real tables (scikit-learn's breast cancer and wine) and on the shapes
that take Evidently's other branches (few distinct values, small references, ties, NaN)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from evidently.legacy.calculations.stattests import get_stattest
from evidently.legacy.core import ColumnType
from scipy import stats
from sklearn.datasets import load_breast_cancer, load_wine

from mlops_steps.common.drift import column_drift, data_drift
from mlops_steps.common.drift_stats import Side, fast_test, sturges_edges, wasserstein
from mlops_steps.common.window import FeatureKind
from mlops_steps.core.policies import DriftPolicy

METHODS = ("wasserstein", "psi", "jensenshannon", "kl_div", None)


def _evidently(reference: pd.Series, current: pd.Series, kind: str, method: Any) -> Any:
    """Evidently's own test, cleaned as Evidently's DataDriftPreset cleans (NaN dropped)."""
    ref, cur = reference.dropna(), current.dropna()
    column_type = ColumnType(kind)
    test = get_stattest(ref, cur, column_type, method)
    return test, test(ref, cur, column_type, None)


def _pairs() -> Iterator[tuple[str, pd.Series, pd.Series]]:
    """(name, reference, current): real columns split in two, and shifted copies of them."""
    cancer = load_breast_cancer(as_frame=True).frame
    for column in ("mean radius", "mean texture", "worst area", "mean symmetry"):
        values = cancer[column]
        yield column, values.iloc[::2].reset_index(drop=True), values.iloc[1::2] * 1.1
    wine = load_wine(as_frame=True).frame
    yield "proline", wine["proline"], wine["proline"].iloc[:60] + 50
    rng = np.random.default_rng(3)
    yield "few values", pd.Series(rng.integers(0, 4, 3000)), pd.Series(rng.integers(0, 5, 2000))
    yield "ties", pd.Series(rng.integers(0, 40, 5000) / 2), pd.Series(rng.integers(0, 50, 900) / 2)
    with_nan = pd.Series(rng.normal(size=2500))
    with_nan[::7] = np.nan
    yield "nan", with_nan, pd.Series(rng.normal(0.2, 1.0, 1500))


@pytest.mark.parametrize("method", METHODS)
def test_numeric_tests_equal_evidentlys(method: str | None) -> None:
    for name, reference, current in _pairs():
        test, expected = _evidently(reference, current, "num", method)
        got = column_drift(name, "num", reference, current, method=method, threshold=None)
        assert got.method == test.name, name
        assert got.score == pytest.approx(expected.drift_score, rel=1e-9, abs=1e-12), name
        assert got.drifted == expected.drifted and got.threshold == expected.actual_threshold


@pytest.mark.parametrize("method", ["psi", "jensenshannon", "kl_div", "chisquare", None])
def test_category_tests_equal_evidentlys(method: str | None) -> None:
    wine = load_wine(as_frame=True).frame
    labels = wine["target"].map({0: "a", 1: "b", 2: "c"})
    rng = np.random.default_rng(4)
    extra = pd.Series(rng.choice(list("abcd"), 5000, p=[0.4, 0.3, 0.2, 0.1]))
    cases = [
        (labels.astype("category"), labels.iloc[:100].astype(object)),  # a small reference
        (extra.astype("category"), pd.Series(rng.choice(list("bcd"), 3000)).astype("category")),
    ]
    for reference, current in cases:
        test, expected = _evidently(reference, current, "cat", method)
        got = column_drift("c", "cat", reference, current, method=method, threshold=0.07)
        result = test(reference, current, ColumnType.Categorical, 0.07)
        assert got.method == test.name
        assert got.score == pytest.approx(result.drift_score, rel=1e-9, abs=1e-12)
        assert got.drifted == result.drifted and expected.actual_threshold is not None


def test_other_methods_are_evidentlys_own() -> None:
    cancer = load_breast_cancer(as_frame=True).frame["mean radius"]
    reference, current = cancer.iloc[:300], cancer.iloc[300:] + 3.0
    side = Side.of(reference, numeric=True)
    assert fast_test("ks", side, Side.of(current, numeric=True), 0.05) is None
    got = column_drift("r", "num", reference, current, method="ks", threshold=None)
    assert got.score == pytest.approx(stats.ks_2samp(reference, current)[1])
    assert got.method == "ks" and got.drifted


def test_wasserstein_and_sturges_edges_equal_scipy_and_numpy() -> None:
    rng = np.random.default_rng(5)
    for n, m in ((1, 7), (13, 13), (500, 37), (2000, 3001)):
        x, y = rng.normal(size=n), np.round(rng.normal(0.3, 2.0, size=m), 1)
        assert wasserstein(np.sort(x), np.sort(y)) == pytest.approx(
            stats.wasserstein_distance(x, y), rel=1e-12
        )
        both = np.concatenate([x, y])
        edges = sturges_edges(both.min(), both.max(), both.size)
        assert np.array_equal(edges, np.histogram_bin_edges(both, bins="sturges"))


def test_data_drift_judges_every_column_like_evidently() -> None:
    cancer = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    reference, current = cancer.iloc[:300].reset_index(drop=True), cancer.iloc[300:] * 1.05
    kinds = {name: FeatureKind(name, "float") for name in cancer.columns}
    decision = data_drift(reference, current.reset_index(drop=True), kinds, DriftPolicy())
    for column in decision["columns"]:
        name = column["column"]
        _, expected = _evidently(reference[name], current[name], "num", None)
        assert column["drifted"] == expected.drifted, name
        assert column["score"] == pytest.approx(expected.drift_score, rel=1e-9)
    assert [c["column"] for c in decision["columns"]] == list(cancer.columns)
