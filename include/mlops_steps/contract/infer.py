"""Draft a model contract from a sample of its data (``mlops-step contract infer``).

What the data shows is written as settings (kinds, nullability, the observed range as the
*expected* range, category vocabularies, the label's classes); what only a person can know is
written as a comment marked ``DECIDE`` (hard limits, gate thresholds, the positive class). The
text is built here rather than dumped, because YAML libraries drop comments; each value is still
rendered by PyYAML, so quoting (``'yes'``, ``'1'``, ``1.0e-05``) is right.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from mlops_steps.contract.loader import (
    ContractError,
    contract_path,
    load_contract,
    parse_contract,
    read_yaml,
)
from mlops_steps.contract.model import DEFAULT_PRIMARY, METRICS, TASKS, ModelContract
from mlops_steps.core.policies import GateThresholds, TrainParams, ValidationPolicy
from mlops_steps.core.sections import ScheduleSettings

NAME_PATTERN = "^[a-z][a-z0-9_]{0,39}$"
# A string column with more distinct values than this is more likely an id or free text.
_MANY_CATEGORIES = 200
# A numeric label with more distinct values than this is a measurement, not classes.
_MANY_CLASSES = 50
# Label values that usually name the event a binary model scores.
_POSITIVE_WORDS = frozenset(
    {"1", "yes", "y", "true", "t", "positive", "pos", "churn", "churned", "fraud", "spam", "bad"}
)


@dataclass(frozen=True)
class Draft:
    """The contract text and what the person running ``infer`` should read (stderr)."""

    text: str
    notes: tuple[str, ...] = field(default=())


def _scalar(value: Any) -> str:
    """One YAML scalar or flow list, quoted where YAML would misread it."""
    import yaml

    dumped: str = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return dumped.removesuffix("\n").removesuffix("\n...").strip()


def _number(value: Any, integer: bool) -> int | float:
    return int(value) if integer else float(value)


def _fail(message: str, key: str, fix: str) -> ContractError:
    return ContractError(message, subject=key, fix=fix)


def _label_values(frame: pd.DataFrame, label: str, task: str) -> tuple[list[Any], list[str]]:
    """The label's classes (binary: negative then positive; multiclass: sorted) and notes."""
    column = frame[label]
    values = column.dropna()
    if ptypes.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    distinct = sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v))
    if ptypes.is_bool_dtype(values):
        # The steps compare str(label value) with the class labels: True -> "True".
        distinct = [str(v) for v in distinct]
    elif not ptypes.is_integer_dtype(values):
        distinct = sorted(str(v) for v in distinct)
    suggestion = "binary" if len(distinct) == 2 else "multiclass"
    if task == "regression":
        if not ptypes.is_numeric_dtype(column) or ptypes.is_bool_dtype(column):
            raise _fail(
                f"is {column.dtype}, not numbers: a regression model predicts a number",
                f"--label {label}",
                f"use --task {suggestion}",
            )
        return [], []
    if task == "binary" and len(distinct) != 2:
        raise _fail(
            f"has {len(distinct)} distinct values in the sample ({_preview(distinct)}); "
            "a binary model has exactly 2",
            f"--label {label}",
            "use --task multiclass" if len(distinct) > 2 else "check the label column",
        )
    if task == "multiclass" and len(distinct) < 3:
        raise _fail(
            f"has {len(distinct)} distinct values in the sample; a multiclass model has 3 or more",
            f"--label {label}",
            "use --task binary" if len(distinct) == 2 else "check the label column",
        )
    if task == "multiclass" and ptypes.is_float_dtype(values):
        raise _fail(
            "holds fractional numbers: classes are labels, not measurements",
            f"--label {label}",
            "use --task regression",
        )
    if task == "multiclass" and ptypes.is_numeric_dtype(values) and len(distinct) > _MANY_CLASSES:
        raise _fail(
            f"has {len(distinct)} distinct numbers in the sample: a measurement, not classes?",
            f"--label {label}",
            "use --task regression, or map the numbers to named classes in the source",
        )
    notes = []
    if task == "binary":
        positive = _positive(distinct)
        distinct = [v for v in distinct if v != positive] + [positive]
        notes.append(
            f"positive_class is {positive!r} (the score is P({label} == {positive!r})): check it"
        )
    return distinct, notes


def _positive(values: list[Any]) -> Any:
    words = [v for v in values if str(v).strip().lower() in _POSITIVE_WORDS]
    return words[-1] if len(words) == 1 else values[-1]


def _preview(values: Sequence[Any], limit: int = 6) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _feature_lines(name: str, column: pd.Series, rows: int) -> tuple[list[str], list[str]]:
    """The YAML lines of one feature (list item) and notes about it."""
    lines, notes = [f"  - name: {_scalar(str(name))}"], []
    missing = int(column.isna().sum())
    present = column.dropna()
    if present.empty:
        raise _fail(
            "is empty in the sample (every value missing)",
            f"column {name!r}",
            "drop it from the source, or sample more rows (--sample-rows)",
        )
    if ptypes.is_datetime64_any_dtype(column) or ptypes.is_timedelta64_dtype(column):
        raise _fail(
            f"is {column.dtype}; a feature is integer, float, category or boolean",
            f"column {name!r}",
            "convert it in the source (e.g. days since an event), or drop it",
        )
    objects = ptypes.is_object_dtype(column)
    if ptypes.is_bool_dtype(column) or (objects and present.map(type).eq(bool).all()):
        lines.append("    kind: boolean")
    elif ptypes.is_numeric_dtype(column):
        integer = ptypes.is_integer_dtype(column)
        low, high = _number(present.min(), integer), _number(present.max(), integer)
        lines.append(f"    kind: {'integer' if integer else 'float'}")
        lines.append(
            f"    expected: {{min: {_scalar(low)}, max: {_scalar(high)}}}"
            "  # observed: outside it a value is served and flagged"
        )
        floor = _scalar(0 if integer else 0.0) if low >= 0 else "null"
        lines.append(
            f"    # limits: {{min: {floor}, max: null}}"
            "  # DECIDE: hard limits (impossible values get 422), then uncomment"
        )
        if integer and present.nunique() <= 2:
            notes.append(
                f"{name}: kept integer (values {_preview(sorted(present.unique()))}); "
                "make it category if the numbers are codes"
            )
    else:
        vocabulary = sorted({str(v) for v in present})
        lines.append("    kind: category")
        if not objects and not isinstance(column.dtype, pd.CategoricalDtype):
            notes.append(f"{name}: {column.dtype} read as a category")
        if len(vocabulary) > _MANY_CATEGORIES or (
            len(vocabulary) == len(present) and len(present) > 20
        ):
            lines.append(
                f"    # WARNING: {len(vocabulary)} distinct values in {len(present)} rows: "
                "an identifier or free text? pass it as --id, or drop it"
            )
            notes.append(f"{name}: {len(vocabulary)} distinct strings, looks like an id or text")
        lines.append(f"    categories: {_scalar(vocabulary)}")
        lines.append(
            "    unseen: reject  # DECIDE: a value not listed gets 422 (reject) or is served "
            "as missing (missing)"
        )
    if missing:
        lines.insert(2, f"    nullable: true  # {missing} of {rows} sample rows are missing")
    return lines, notes


def _gate_lines(task: str, primary: str, label: pd.Series) -> list[str]:
    """A gate on the primary metric: a floor a useless model would reach, and at most a small
    loss against the champion; a person decides the real bar."""
    lines = ["gate:", "  checks:"]
    if task == "binary":
        lines += [
            "    # DECIDE: 0.5 is chance; set the AUC this model must reach. The champion",
            "    # comparison: the challenger may be at most 0.01 below it on the same hold-out.",
            f"    - {{metric: {primary}, threshold: 0.7, min_absolute_change: -0.01}}",
        ]
    elif task == "multiclass":
        shares = label.value_counts(normalize=True)
        prior = -sum(float(p) * math.log(float(p)) for p in shares if p > 0)
        lines += [
            f"    # DECIDE: {prior:.4g} is the log loss of predicting the class mix (a useless",
            "    # model); set a lower bar. vs the champion: at most 2 % worse.",
            f"    - {{metric: {primary}, threshold: {_scalar(round(prior, 4))},"
            " min_relative_change: -0.02}",
        ]
    else:
        spread = float(label.std(ddof=0))
        lines += [
            f"    # DECIDE: {spread:.4g} is the RMSE of predicting the mean (the label's spread);",
            "    # set a lower bar in the label's unit. vs the champion: at most 2 % worse.",
            f"    - {{metric: {primary}, threshold: {_scalar(float(f'{spread:.4g}'))},"
            " min_relative_change: -0.02}",
        ]
    defaults = GateThresholds()
    lines.append(f"  # max_latency_ms: {defaults.max_latency_ms}  # default")
    if task == "regression":
        # The deployment's default collapse bound is in AUC-like units (0..1); an error in the
        # label's unit needs its own, or every champion comparison would ask for a review.
        collapse = float(f"{0.25 * float(label.std(ddof=0)):.4g}")
        lines += [
            "  # DECIDE: how much worse the champion's RMSE may get on a new hold-out (label's",
            "  # unit) before its labels count as changed and a person must review: a quarter",
            "  # of the label's spread.",
            f"  max_champion_collapse: {_scalar(collapse)}",
        ]
    else:
        lines.append(f"  # max_champion_collapse: {defaults.max_champion_collapse}  # default")
    return lines


def _small_data_lines(rows: int) -> list[str]:
    """Overrides for a small table: the defaults expect thousands of rows."""
    validation, training = ValidationPolicy(), TrainParams()
    lines: list[str] = []
    if rows < validation.min_rows:
        lines += [
            "",
            f"# The sample has {rows} rows; the defaults expect more.",
            "validation:",
            f"  min_rows: {max(1, rows // 2)}  # DECIDE: fewer rows fail validation "
            f"(default {validation.min_rows}); here half of the sample",
        ]
    leaf = max(5, rows // 50)
    if leaf < training.min_data_in_leaf:
        lines += [
            "",
            "training:",
            f"  min_data_in_leaf: {leaf}  # LightGBM; default {training.min_data_in_leaf} "
            "leaves a small table few splits",
        ]
    return lines


def _refuse_bad_input(
    frame: pd.DataFrame, name: str, label: str, task: str, id_column: str | None
) -> None:
    import re

    if not re.match(NAME_PATTERN, name):
        raise _fail(
            "must be lower case letters, digits and _ (starting with a letter, at most 40)",
            f"--name {name!r}",
            f"use e.g. {re.sub(r'[^a-z0-9_]', '_', name.lower()).strip('_')[:40] or 'my_model'}",
        )
    if task not in TASKS:
        raise _fail(f"is not one of {', '.join(TASKS)}", f"--task {task!r}", "name one of them")
    columns = list(frame.columns)
    for flag, column in (("--label", label), ("--id", id_column)):
        if column is not None and column not in columns:
            raise _fail(
                f"is not a column of the sample (columns: {_preview(columns, 12)})",
                f"{flag} {column}",
                "name one of its columns",
            )
    if id_column == label:
        raise _fail("is also the label", f"--id {id_column}", "name the row id column")
    if frame.empty:
        raise _fail("has no rows", "the sample", "check the source")
    if len(columns) - (2 if id_column else 1) < 1:
        raise _fail("has no feature columns", "the sample", "add the model's inputs")
    if frame[label].isna().any():
        raise _fail(
            f"is missing in {int(frame[label].isna().sum())} sample rows",
            f"--label {label}",
            "drop unlabelled rows from the training source",
        )
    if id_column is not None and frame[id_column].duplicated().any():
        raise _fail("repeats values in the sample", f"--id {id_column}", "name a unique column")


def _head_lines(
    name: str, *, label: str, task: str, id_column: str | None, source: str, classes: list[Any]
) -> list[str]:
    lines = [
        f"name: {name}",
        f"description: {_scalar(f'{task} model of {label}')}  # say what it predicts, for whom",
        "# owners: [your-team]",
    ]
    if source:
        lines.append(f"source: {_scalar(source)}  # the training DAG's default source")
    if id_column:
        lines.append(f"id_column: {_scalar(id_column)}")
    else:
        lines.append("# id_column: none given: each row's id is derived from its content")
    lines += [f"label: {_scalar(label)}", f"task: {task}"]
    if task == "binary":
        lines += [
            f"classes: {_scalar(classes)}  # negative, positive",
            f"positive_class: {_scalar(classes[1])}  # DECIDE: the score is P(label == this)",
        ]
    elif task == "multiclass":
        lines.append(f"classes: {_scalar(classes)}  # the order of the probabilities served")
    return lines


def draft_contract(
    frame: pd.DataFrame,
    *,
    name: str,
    label: str,
    task: str,
    id_column: str | None = None,
    source: str = "",
    total_rows: int | None = None,
) -> Draft:
    """The contract text for ``frame`` (a sample of the model's table)."""
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    _refuse_bad_input(frame, name, label, task, id_column)
    rows = len(frame)
    classes, notes = _label_values(frame, label, task)
    primary = DEFAULT_PRIMARY[task]  # type: ignore[index]
    of_rows = f"{rows} of {total_rows}" if total_rows and total_rows != rows else f"{rows}"
    lines = [
        f"# Model contract for {name}, drafted by `mlops-step contract infer` from {of_rows} rows",
        f"# of {source or 'a sample'}. Read it, settle every DECIDE, then check it with",
        f"# `mlops-step contract check {name}`. Keys: contract.schema.json beside the loader.",
        *_head_lines(
            name, label=label, task=task, id_column=id_column, source=source, classes=classes
        ),
        "",
        "# kind: integer | float | category | boolean. expected: the range seen in the sample;",
        "# outside it a value is served, counted and flagged. limits: hard limits, beyond them a",
        "# value is impossible (the service answers 422, validation fails): only you know them.",
        "features:",
    ]
    slices = []
    for column in frame.columns:
        if column in (label, id_column):
            continue
        feature_lines, feature_notes = _feature_lines(column, frame[column], rows)
        lines += feature_lines
        notes += feature_notes
        if "    kind: category" in feature_lines and frame[column].nunique() <= 12:
            slices.append(column)
    lines += ["", "# Metrics per value of these category features (optional)."]
    lines.append(f"# slices: {_scalar(slices[:2])}" if slices else "# slices: []")
    alternatives = ", ".join(METRICS[task])  # type: ignore[index]
    lines += ["", "metrics:", f"  primary: {primary}  # {task}: {alternatives}", ""]
    lines += _gate_lines(task, primary, frame[label])
    lines += _small_data_lines(rows)
    schedules = ScheduleSettings()
    lines += ["", "# schedules:  # UTC cron, or null for none; the defaults:"]
    for key in ("training", "monitoring", "deployment_reconcile"):
        lines.append(f"#   {key}: {_scalar(getattr(schedules, key))}")
    return Draft(text="\n".join(lines) + "\n", notes=tuple(notes))


def write_contract(
    draft: Draft, name: str, directory: Path | None = None, *, force: bool = False
) -> tuple[Path, ModelContract]:
    """Write ``draft`` as ``<directory>/<name>.yaml`` once the loader accepts it (a file the
    loader would refuse is never left behind); an existing file is kept unless ``force``."""
    path = contract_path(name, directory)
    if path.exists() and not force:
        raise _fail(
            "exists already", str(path), "pass --force to replace it, or choose another --name"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.draft")
    staging.write_text(draft.text, encoding="utf-8")
    try:
        parse_contract(read_yaml(staging), path)
    except ContractError as exc:
        staging.unlink(missing_ok=True)
        raise ContractError(
            f"the drafted contract is refused: {exc.subject}: {exc.message}",
            subject="contract infer",
            fix="report this with the sample's column types (a bug in contract infer)",
        ) from None
    staging.replace(path)
    return path, load_contract(name, path.parent)
