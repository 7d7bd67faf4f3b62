"""The vectorised checks decide every expectation of the contract's suite exactly as Great
Expectations' own pandas execution does: the same success, the same counts and percentages, the
same first unexpected values and row labels, the same observed values; on small real tables
(scikit-learn's wine, breast cancer and diabetes, the churn generator) valid and broken (nulls
where forbidden, out of range, unknown categories, wrong types, duplicate ids, missing and extra
columns, too few rows, an empty table).

GX judges a ``category`` or Arrow string column by its dtype (and fails it); the checks judge it
by the values it holds, so GX is run on the frame's plain values (those columns as objects), and
the checks on both the frame as stored and its plain values.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_steps.common.metrics import ROW_ID_COLUMN as ROW_ID
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import Feature, ModelContract
from mlops_steps.contract.synthetic import generate_churn
from mlops_steps.training.validate import build_expectations
from mlops_steps.training.validate_checks import CheckResult, evaluate, evaluate_suite

NOT_NULL = "expect_column_values_to_not_be_null"


def plain_values(frame: pd.DataFrame) -> pd.DataFrame:
    """``category`` and string columns as Python objects (what GX judges value by value)."""
    lean = [
        c
        for c, dtype in frame.dtypes.items()
        if isinstance(dtype, pd.CategoricalDtype | pd.StringDtype)
    ]
    return frame.assign(**{str(c): frame[c].astype(object) for c in lean}) if lean else frame


class GxReference:
    """Great Expectations' own pandas execution of a suite (one ephemeral context)."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        from mlops_steps.training.validate import _drop_default_docs_site

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _drop_default_docs_site(self.context)
        asset = self.context.data_sources.add_pandas(name="reference").add_dataframe_asset("f")
        self.batch = asset.add_batch_definition_whole_dataframe(name="whole")
        self.runs = 0

    def run(self, expectations: list[Any], frame: pd.DataFrame) -> list[Any]:
        """GX's results in the suite's order."""
        gx = self.gx
        self.runs += 1
        suite = self.context.suites.add(gx.ExpectationSuite(name=f"suite_{self.runs}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"run_{self.runs}", data=self.batch, suite=suite)
        )
        outcome = definition.run(batch_parameters={"dataframe": frame})
        by_id = {getattr(r.expectation_config, "id", None): r for r in outcome.results}
        return [by_id[c.id] for c in suite.expectation_configurations]


@pytest.fixture(scope="module")
def gx_reference() -> Iterator[GxReference]:
    yield GxReference()


def _raised(exception_info: dict[str, Any]) -> bool:
    """GX records an exception flat, or keyed by the metric that raised it."""
    if exception_info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in exception_info.values())


def _as_json(value: Any) -> Any:
    from great_expectations.util import convert_to_json_serializable

    return json.loads(json.dumps(convert_to_json_serializable(value)))


def _comparable(expectation_type: str, raised: bool, result: dict[str, Any]) -> dict[str, Any]:
    if raised:
        return {}  # GX records no result for a check that raised, nor do the checks
    out = _as_json(result)
    if expectation_type == NOT_NULL:
        # The unexpected values are all missing: GX lists NaN, None or NA by dtype.
        out.pop("partial_unexpected_list", None)
        out.pop("partial_unexpected_counts", None)
    return dict(out)


def assert_same_as_gx(
    gx_reference: GxReference, contract: ModelContract, frame: pd.DataFrame, min_rows: int = 10
) -> list[CheckResult]:
    expectations = build_expectations(contract, min_rows)
    configs = [e.configuration for e in expectations]
    reference = gx_reference.run(expectations, plain_values(frame))
    checks = [(c.type, c.kwargs) for c in configs]
    ours = evaluate_suite(frame, checks)
    on_plain = evaluate_suite(plain_values(frame), checks)
    assert len(ours) == len(on_plain) == len(reference) == len(expectations)
    for config, theirs, mine, mine_plain in zip(configs, reference, ours, on_plain, strict=True):
        name = f"{config.type}({config.kwargs.get('column', '')})"
        gx_raised = _raised(theirs.exception_info)
        expected = (theirs.success, gx_raised, _comparable(config.type, gx_raised, theirs.result))
        for got in (mine, mine_plain):
            raised = got.exception_message is not None
            actual = (got.success, raised, _comparable(config.type, raised, got.result))
            assert actual == expected, f"{name}: checks {actual} != GX {expected}"
    return ours


def _failed(contract: ModelContract, results: list[CheckResult]) -> set[str]:
    names = []
    for expectation, result in zip(build_expectations(contract, 10), results, strict=True):
        config = expectation.configuration
        if not result.success:
            names.append(f"{config.type}({config.kwargs.get('column', '')})")
    return set(names)


# --- the churn generator's table -------------------------------------------------------------

CHURN = load_contract("churn")


def _churn(rows: int = 300) -> pd.DataFrame:
    return generate_churn(rows, seed=7)


def _nulls(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[3, 5, 40], "total_charges"] = np.nan
    frame.loc[[7, 41], "contract_type"] = np.nan
    frame.loc[[2], "customer_id"] = pd.NA
    return frame


def _out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[:9, "tenure_months"] = -5
    frame.loc[[20, 21], "monthly_charges"] = 500.0
    return frame


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    frame["contract_type"] = frame["contract_type"].cat.add_categories(["weekly"])
    frame.loc[[0, 1, 299], "contract_type"] = "weekly"
    frame["phone_service"] = frame["phone_service"].astype(object)
    frame.loc[[5], "phone_service"] = "maybe"
    return frame


def _wrong_types(frame: pd.DataFrame) -> pd.DataFrame:
    frame["monthly_charges"] = frame["monthly_charges"].astype(str)
    frame["tenure_months"] = frame["tenure_months"].astype(float)
    frame["contract_type"] = pd.Categorical(frame["contract_type"].cat.codes)  # ints
    frame["churn"] = frame["churn"].astype(str)
    frame["customer_id"] = np.arange(len(frame))
    return frame


def _mixed_objects(frame: pd.DataFrame) -> pd.DataFrame:
    charges = frame["monthly_charges"].astype(object)
    charges[[4, 9]] = "n/a"
    charges[[11]] = None
    frame["monthly_charges"] = charges
    frame["senior_citizen"] = pd.Categorical(frame["senior_citizen"], categories=[0, 1, "x"])
    frame["partner"] = frame["partner"].astype(object)
    frame.loc[[6], "partner"] = 1
    return frame


def _duplicate_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[1, 250], "customer_id"] = frame.loc[0, "customer_id"]
    frame.loc[[8], "customer_id"] = frame.loc[9, "customer_id"]
    return frame


def _columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["tenure_months"]).assign(extra=1)


CHURN_CASES: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], set[str]]] = {
    "valid": (lambda f: f, set()),
    "nulls": (
        _nulls,
        {f"{NOT_NULL}(total_charges)", f"{NOT_NULL}(contract_type)", f"{NOT_NULL}(customer_id)"},
    ),
    "out_of_range": (
        _out_of_range,
        {
            "expect_column_values_to_be_between(tenure_months)",
            "expect_column_values_to_be_between(monthly_charges)",
        },
    ),
    "unknown_category": (
        _unknown_category,
        {
            "expect_column_values_to_be_in_set(contract_type)",
            "expect_column_values_to_be_in_set(phone_service)",
        },
    ),
    "wrong_types": (
        _wrong_types,
        {
            "expect_column_values_to_be_in_type_list(monthly_charges)",
            "expect_column_values_to_be_between(monthly_charges)",
            "expect_column_values_to_be_in_type_list(tenure_months)",
            "expect_column_values_to_be_in_type_list(contract_type)",
            "expect_column_values_to_be_in_set(contract_type)",
            "expect_column_values_to_be_in_type_list(churn)",
            "expect_column_values_to_be_in_set(churn)",
            "expect_column_values_to_be_in_type_list(customer_id)",
        },
    ),
    "mixed_objects": (
        _mixed_objects,
        {
            f"{NOT_NULL}(monthly_charges)",
            "expect_column_values_to_be_in_type_list(monthly_charges)",
            "expect_column_values_to_be_between(monthly_charges)",
            "expect_column_values_to_be_in_type_list(senior_citizen)",
            "expect_column_values_to_be_in_type_list(partner)",
            "expect_column_values_to_be_in_set(partner)",
        },
    ),
    "duplicate_ids": (_duplicate_ids, {"expect_column_values_to_be_unique(customer_id)"}),
    "too_few_rows": (lambda f: f.head(5), {"expect_table_row_count_to_be_between()"}),
    "empty": (lambda f: f.head(0), {"expect_table_row_count_to_be_between()"}),
}


@pytest.mark.parametrize("case", sorted(CHURN_CASES))
def test_churn_checks_decide_as_gx(gx_reference: GxReference, case: str) -> None:
    corrupt, failing = CHURN_CASES[case]
    results = assert_same_as_gx(gx_reference, CHURN, corrupt(_churn()))
    assert _failed(CHURN, results) == failing


def test_missing_and_extra_columns_decide_as_gx(gx_reference: GxReference) -> None:
    results = assert_same_as_gx(gx_reference, CHURN, _columns(_churn()))
    failed = _failed(CHURN, results)
    assert "expect_table_columns_to_match_set()" in failed
    assert {n for n in failed if "tenure_months" in n} == {
        f"{NOT_NULL}(tenure_months)",
        "expect_column_values_to_be_in_type_list(tenure_months)",
        "expect_column_values_to_be_between(tenure_months)",
    }
    types = [e.configuration.type for e in build_expectations(CHURN, 10)]
    by_type = dict(zip(types, results, strict=True))
    assert by_type["expect_table_columns_to_match_set"].result["details"]["mismatched"] == {
        "unexpected": ["extra"],
        "missing": ["tenure_months"],
    }


def test_plain_object_churn_decides_as_gx(gx_reference: GxReference) -> None:
    """The table as a CSV reads back (every text column plain strings), valid and broken."""
    frame = plain_values(_out_of_range(_nulls(_churn())))
    assert_same_as_gx(gx_reference, CHURN, frame)


# --- scikit-learn's tables --------------------------------------------------------------------


def _sklearn(loader: str) -> pd.DataFrame:
    from sklearn import datasets

    frame: pd.DataFrame = getattr(datasets, loader)(as_frame=True).frame
    return frame


def _contract(
    frame: pd.DataFrame,
    task: str,
    classes: tuple[Any, ...] = (),
    extra: tuple[Feature, ...] = (),
) -> ModelContract:
    features = tuple(
        Feature(
            name=str(c),
            kind="float",
            minimum=float(frame[c].min()) - 1.0 if frame[c].min() < 0 else 0.0,
            maximum=float(frame[c].max()) * 1.5 + 1.0,
        )
        for c in frame.columns.drop("target")
    )
    return ModelContract(
        name="sk",
        task=task,  # type: ignore[arg-type]
        label="target",
        features=features + extra,
        primary_metric={"binary": "auc", "multiclass": "log_loss"}.get(task, "rmse"),
        gate=(),
        classes=classes,
    )


def test_wine_decides_as_gx(gx_reference: GxReference) -> None:
    wine = _sklearn("load_wine")
    contract = _contract(wine, "multiclass", (0, 1, 2))
    frame = wine.assign(**{ROW_ID: [f"w{i}" for i in range(len(wine))]})
    assert _failed(contract, assert_same_as_gx(gx_reference, contract, frame)) == set()
    broken = frame.copy()
    broken.loc[[3, 100], "target"] = 7
    broken.loc[[5], "alcohol"] = 1e6
    broken.loc[[6, 7], "magnesium"] = np.nan
    failed = _failed(contract, assert_same_as_gx(gx_reference, contract, broken))
    assert failed == {
        "expect_column_values_to_be_in_set(target)",
        "expect_column_values_to_be_between(alcohol)",
        f"{NOT_NULL}(magnesium)",
    }
    as_float = frame.assign(target=frame["target"].astype(float))
    failed = _failed(contract, assert_same_as_gx(gx_reference, contract, as_float))
    assert failed == {"expect_column_values_to_be_in_type_list(target)"}


@pytest.mark.parametrize("storage", ["object", "category", "string[pyarrow]"])
def test_text_labels_decide_as_gx(gx_reference: GxReference, storage: str) -> None:
    wine = _sklearn("load_wine")
    names = ("class_0", "class_1", "class_2")
    labels = pd.Series(np.array(names, dtype=object)[wine["target"]]).astype(storage)
    frame = wine.assign(target=labels, **{ROW_ID: pd.Series(range(len(wine))).astype(str)})
    frame[ROW_ID] = frame[ROW_ID].astype(storage)
    contract = _contract(wine, "multiclass", names)
    assert _failed(contract, assert_same_as_gx(gx_reference, contract, frame)) == set()
    frame["target"] = frame["target"].astype(object)
    frame.loc[[0, 1], "target"] = "class_9"
    frame.loc[[2], "target"] = None
    frame["target"] = frame["target"].astype(storage)
    failed = _failed(contract, assert_same_as_gx(gx_reference, contract, frame))
    assert failed == {"expect_column_values_to_be_in_set(target)", f"{NOT_NULL}(target)"}


def test_booleans_and_nullable_numbers_decide_as_gx(gx_reference: GxReference) -> None:
    cancer = _sklearn("load_breast_cancer")
    extra = (
        Feature("large", "boolean"),
        Feature("large_or_unknown", "boolean", nullable=True),
        Feature("texture_bin", "integer", nullable=True, minimum=0, maximum=40),
        Feature("radius_bin", "integer", minimum=0, maximum=30),
    )
    contract = _contract(cancer, "binary", (1, 0), extra)
    unknown = (cancer["mean radius"] > 15).astype(object)
    unknown[::7] = None
    frame = cancer.assign(
        large=cancer["mean radius"] > 15,
        large_or_unknown=unknown,
        texture_bin=cancer["mean texture"].round().astype("Int64").mask(cancer.index % 5 == 0),
        radius_bin=cancer["mean radius"].round().astype("int32"),
        **{ROW_ID: [f"b{i}" for i in range(len(cancer))]},
    )
    assert _failed(contract, assert_same_as_gx(gx_reference, contract, frame)) == set()
    frame["large_or_unknown"] = frame["large_or_unknown"].where(cancer.index != 3, "yes")
    frame["texture_bin"] = frame["texture_bin"].astype("float64")
    frame.loc[[10], "texture_bin"] = 99.0
    frame["radius_bin"] = frame["radius_bin"].astype("float32")
    failed = _failed(contract, assert_same_as_gx(gx_reference, contract, frame))
    assert failed == {
        "expect_column_values_to_be_in_type_list(large_or_unknown)",
        "expect_column_values_to_be_in_set(large_or_unknown)",
        "expect_column_values_to_be_between(texture_bin)",
        "expect_column_values_to_be_in_type_list(radius_bin)",
    }


def test_regression_label_decides_as_gx(gx_reference: GxReference) -> None:
    diabetes = _sklearn("load_diabetes")
    contract = _contract(diabetes, "regression")
    frame = diabetes.assign(**{ROW_ID: [f"d{i}" for i in range(len(diabetes))]})
    assert _failed(contract, assert_same_as_gx(gx_reference, contract, frame)) == set()
    frame.loc[[0, 1], ROW_ID] = "d2"
    frame["target"] = frame["target"].astype(str)
    failed = _failed(contract, assert_same_as_gx(gx_reference, contract, frame))
    assert failed == {
        f"expect_column_values_to_be_unique({ROW_ID})",
        "expect_column_values_to_be_in_type_list(target)",
    }


# --- what GX cannot run: refused by name, never skipped ---------------------------------------


def test_an_unknown_expectation_or_option_fails_closed() -> None:
    frame = _churn(20)
    unknown = evaluate(frame, "expect_column_mean_to_be_between", {"column": "tenure_months"})
    assert not unknown.success
    assert unknown.exception_message == "no vectorised check for expect_column_mean_to_be_between"
    conditional = evaluate(
        frame,
        "expect_column_values_to_be_in_set",
        {"column": "contract_type", "value_set": ["one_year"], "row_condition": "churn == 1"},
    )
    assert not conditional.success and "row_condition" in str(conditional.exception_message)
    assert conditional.exception_info["raised_exception"] is True


def test_a_category_of_strings_is_text_and_a_category_of_ints_is_not() -> None:
    text_types = {"type_list": ["object", "str", "string", "StringDtype"]}
    for values in (
        pd.Categorical(["a", "b", None]),
        pd.array(["a", None, "b"], dtype="string[pyarrow]"),
        pd.array(["a", None, "b"], dtype="string[python]"),
    ):
        frame = pd.DataFrame({"c": values})
        result = evaluate(
            frame, "expect_column_values_to_be_in_type_list", {"column": "c", **text_types}
        )
        assert result.success and result.result["missing_count"] == 1, values
    ints = pd.DataFrame({"c": pd.Categorical([1, 2, 1])})
    result = evaluate(
        ints, "expect_column_values_to_be_in_type_list", {"column": "c", **text_types}
    )
    assert not result.success and result.result["unexpected_count"] == 3


# --- the benchmark's plain pass computes the same checks --------------------------------------


def _bench_module() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "bench" / "plain_validate.py"
    spec = importlib.util.spec_from_file_location("plain_validate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", sorted(set(CHURN_CASES) - {"mixed_objects"} | {"columns"}))
def test_the_benchmarks_plain_pass_decides_as_the_checks(case: str) -> None:
    """bench/bench_validate.py times validate against this pass: it must decide the same."""
    corrupt, failing = CHURN_CASES.get(case, (_columns, None))
    frame = corrupt(_churn())
    configs = [e.configuration for e in build_expectations(CHURN, 10)]
    results = evaluate_suite(frame, [(c.type, c.kwargs) for c in configs])
    plain = _bench_module().plain_checks(frame, CHURN, 10)
    assert set(plain) == {f"{c.type}({c.kwargs.get('column', '')})" for c in configs}
    failed = _failed(CHURN, results)
    assert {name for name, ok in plain.items() if not ok} == failed
    assert failing is None or failed == failing
