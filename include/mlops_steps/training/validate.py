"""validate: check the partition against the data contract with Great Expectations.

The suite is built from the model's contract (columns, kinds, nullability, hard limits,
categories, the label's classes), run through a
checkpoint that also renders Data Docs beside the partition, and summarised into
``validation/result.json``. Any failed expectation fails the step with each failure named, and
so does an expectation that was built but not evaluated (a silently dropped check is a failure).
Then the partition is compared with the champion's training data (:mod:`.shift`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlops_steps.common.metrics import ROW_ID_COLUMN
from mlops_steps.common.storage import Partition, load_partition_frame, write_json
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import Feature, ModelContract
from mlops_steps.core.errors import StepError, ValidationFailed
from mlops_steps.core.policies import ValidationPolicy
from mlops_steps.core.settings import Settings
from mlops_steps.training.shift import compare_with_champion, refuse_label_shift

_INT_TYPES = ["int64", "int32", "int16", "int8", "Int64", "Int32"]
_FLOAT_TYPES = ["float64", "float32", "Float64", *_INT_TYPES]
_STRING_TYPES = ["object", "str", "string", "StringDtype"]
_BOOL_TYPES = ["bool", "boolean", "BooleanDtype", "object", *_INT_TYPES, "float64"]
_SITE = "partition_site"


class ExpectationsNotEvaluated(ValidationFailed):
    """Fewer (or more) expectations were evaluated than the suite was built with."""


def _feature_expectations(feature: Feature) -> list[Any]:
    import great_expectations.expectations as gxe

    name = feature.name
    if feature.is_category:
        return [
            gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_STRING_TYPES),
            gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(feature.categories)),
        ]
    if feature.kind == "boolean":
        # True/False, or 0/1 (a CSV column with a missing value reads as float or object).
        return [
            gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_BOOL_TYPES),
            gxe.ExpectColumnValuesToBeInSet(column=name, value_set=[True, False, 0, 1]),
        ]
    # A missing value turns an integer column into floats: a nullable integer may be float.
    integer_only = feature.kind == "integer" and not feature.nullable
    out: list[Any] = [
        gxe.ExpectColumnValuesToBeInTypeList(
            column=name, type_list=_INT_TYPES if integer_only else _FLOAT_TYPES
        )
    ]
    if feature.minimum is not None or feature.maximum is not None:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=feature.minimum, max_value=feature.maximum
            )
        )
    return out


def _label_expectations(contract: ModelContract) -> list[Any]:
    import great_expectations.expectations as gxe

    label = contract.label
    if contract.task == "regression":
        return [gxe.ExpectColumnValuesToBeInTypeList(column=label, type_list=_FLOAT_TYPES)]
    numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in contract.classes)
    return [
        gxe.ExpectColumnValuesToBeInTypeList(
            column=label, type_list=_INT_TYPES if numeric else _STRING_TYPES
        ),
        gxe.ExpectColumnValuesToBeInSet(column=label, value_set=list(contract.classes)),
    ]


def build_expectations(contract: ModelContract, min_rows: int) -> list[Any]:
    """The expectation suite of the model's data (GX objects; imported lazily, GX is slow to
    load): exactly the contract's columns (and the derived row id when it declares no id),
    enough rows, unique ids, no nulls where the contract forbids them, each feature's kind,
    hard limits and categories, and label values the task allows."""
    import great_expectations.expectations as gxe

    id_column = contract.id_column or ROW_ID_COLUMN
    columns = [*contract.all_columns, *(() if contract.id_column else (ROW_ID_COLUMN,))]
    suite: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        # Map expectations pass on an empty table, so the row count guards against empty data.
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectColumnValuesToBeUnique(column=id_column),
        gxe.ExpectColumnValuesToBeInTypeList(column=id_column, type_list=_STRING_TYPES),
        *_label_expectations(contract),
    ]
    nullable = {f.name for f in contract.features if f.nullable}
    for column in columns:
        if column not in nullable:
            suite.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for feature in contract.features:
        suite += _feature_expectations(feature)
    return suite


def _describe_failure(result: Any) -> str:
    config = result.expectation_config
    column = config.kwargs.get("column")
    name = f"{config.type}({column})" if column else config.type
    exception = (result.exception_info or {}).get("exception_message")
    if exception:
        return f"{name}: could not be evaluated ({exception.splitlines()[0][:200]})"
    details = result.result or {}
    if "unexpected_count" in details:
        sample = details.get("partial_unexpected_list", [])[:5]
        return f"{name}: {details['unexpected_count']} unexpected values, e.g. {sample}"
    if "observed_value" in details:
        return f"{name}: observed {details['observed_value']!r}"
    return name


def _drop_default_docs_site(context: Any) -> None:
    """An ephemeral context comes with a docs site in a fresh temp directory; remove both, so
    a long-lived worker does not collect one empty directory per validation."""
    sites = dict(context.variables.data_docs_sites or {})
    default = sites.pop("local_site", None)
    context.variables.data_docs_sites = sites
    if default:
        base = Path(default.get("store_backend", {}).get("base_directory", ""))
        if base.parent == Path(tempfile.gettempdir()) and base.name.startswith("tmp"):
            shutil.rmtree(base, ignore_errors=True)


def run_validate(
    settings: Settings, partition_key: str, policy: ValidationPolicy
) -> dict[str, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phoning home from task pods
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # chatty at INFO on import
    import great_expectations as gx

    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    frame, manifest = load_partition_frame(partition)

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep task logs readable
    _drop_default_docs_site(context)
    context.add_data_docs_site(
        site_name=_SITE,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(partition.data_docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    batch_definition = (
        context.data_sources.add_pandas(name=contract.name)
        .add_dataframe_asset(name=f"partition_{partition.key}")
        .add_batch_definition_whole_dataframe(name="whole_partition")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"{contract.name}_contract"))
    built = build_expectations(contract, policy.min_rows)
    for expectation in built:
        suite.add_expectation(expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=f"{contract.name}_partition", data=batch_definition, suite=suite
        )
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{contract.name}_checkpoint",
            validation_definitions=[validation],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[_SITE])],
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    suite_result = next(iter(outcome.run_results.values()))
    failures = [_describe_failure(r) for r in suite_result.results if not r.success]
    evaluated = suite_result.statistics["evaluated_expectations"]

    partition.validation_dir.mkdir(parents=True, exist_ok=True)
    write_json(partition.validation_dir / "gx_result.json", suite_result.to_json_dict())
    summary: dict[str, Any] = {
        "partition": partition.key,
        "data_sha256": manifest["data_sha256"],
        "success": bool(suite_result.success) and not failures and evaluated == len(built),
        "built_expectations": len(built),
        "evaluated_expectations": evaluated,
        "successful_expectations": suite_result.statistics["successful_expectations"],
        "failed_expectations": failures,
        "data_docs_index": str(partition.data_docs_dir / "index.html"),
        "rows": len(frame),
    }
    if failures or not suite_result.success:
        write_json(partition.result("validate"), summary)
        raise ValidationFailed(
            f"{len(failures)} expectation(s) failed: " + "; ".join(failures or ["(unnamed)"]),
            subject=str(partition.data),
            fix=f"fix the source data; Data Docs: {summary['data_docs_index']}",
        )
    if evaluated != len(built) or len(suite_result.results) != len(built):
        write_json(partition.result("validate"), summary)
        raise ExpectationsNotEvaluated(
            f"the suite was built with {len(built)} expectations but {evaluated} were evaluated "
            f"({len(suite_result.results)} results): a check was dropped or skipped",
            subject=str(partition.data),
            fix="check the Great Expectations version and the suite (build_expectations); "
            f"Data Docs: {summary['data_docs_index']}",
        )
    try:
        shift = compare_with_champion(settings, partition, frame, policy)
    except StepError as exc:
        summary |= {"success": False, "shift": {"status": "not_compared", "error": str(exc)}}
        write_json(partition.result("validate"), summary)
        raise
    summary |= {"success": not shift["refused"], "shift": shift}
    write_json(partition.result("validate"), summary)
    refuse_label_shift(shift, partition)
    return summary
