"""Read a model's contract from ``$MLOPS_MODELS_DIR/<name>.yaml`` (``models/`` by default).

The file is checked against ``contract.schema.json`` (shape) and then for meaning (names that
exist, a metric the task has, limits in order, overrides that name a real policy field), and
every refusal is a :class:`ContractError` naming the file, the key and the fix: in a DAG file it
is the import error an Airflow user reads first.

YAML is read with YAML 1.2 booleans (only ``true``/``false``): under PyYAML's default 1.1 rules
a category list ``[yes, no]`` would silently become booleans.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_steps.contract.model import (
    DEFAULT_PRIMARY,
    METRICS,
    Feature,
    GateCheck,
    ModelContract,
)
from mlops_steps.core.errors import StepError
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.options import declared
from mlops_steps.core.policies import (
    AnalysisPolicy,
    CanaryPolicy,
    DriftPolicy,
    GateThresholds,
    PerformancePolicy,
    ServedWindowPolicy,
    TrainParams,
    ValidationPolicy,
)
from mlops_steps.core.sections import ScheduleSettings

MODELS_DIR_ENV = "MLOPS_MODELS_DIR"
SCHEMA_PATH = Path(__file__).with_name("contract.schema.json")
# The repository's models/ (include/mlops_steps/contract/loader.py -> the repository root);
# the images set MLOPS_MODELS_DIR to where they ship the directory.
_DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[3] / "models"

#: The policy classes each overridable section of a contract may set fields of.
SECTIONS: Mapping[str, tuple[type, ...]] = {
    "training": (TrainParams, ServedDataRequest),
    "validation": (ValidationPolicy,),
    "gate": (GateThresholds,),
    "canary": (CanaryPolicy, AnalysisPolicy),
    "monitoring": (ServedWindowPolicy, DriftPolicy, PerformancePolicy),
    "schedules": (ScheduleSettings,),
}


class ContractError(StepError):
    """A model contract is missing, malformed or contradicts itself."""


def models_dir() -> Path:
    """Where the contracts live: ``$MLOPS_MODELS_DIR``, else the repository's ``models/``."""
    configured = os.environ.get(MODELS_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else _DEFAULT_MODELS_DIR


def contract_path(name: str, directory: Path | None = None) -> Path:
    return (directory or models_dir()) / f"{name}.yaml"


def model_names(directory: Path | None = None) -> list[str]:
    """The models with a contract file, sorted (``*.yaml``; files starting with ``_`` or ``.``
    are skipped, so a draft can wait beside the others)."""
    root = directory or models_dir()
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.yaml") if not p.name.startswith(("_", ".")))


def load_contract(name: str, directory: Path | None = None) -> ModelContract:
    """The contract of model ``name`` (cached per file version)."""
    path = contract_path(name, directory)
    try:
        stat = path.stat()
    except FileNotFoundError:
        known = ", ".join(model_names(path.parent)) or "none"
        raise ContractError(
            f"no contract for model {name!r} (models here: {known})",
            subject=str(path),
            fix=f"write one with `mlops-step contract infer --name {name} ...`, or set "
            f"MLOPS_MODEL_NAME / --model to a model listed, or {MODELS_DIR_ENV} to its directory",
        ) from None
    return _load_cached(path.resolve(), stat.st_mtime_ns, stat.st_size)


def load_all(directory: Path | None = None) -> list[ModelContract]:
    """Every contract in the models directory (the DAG factory builds DAGs for each)."""
    return [load_contract(name, directory) for name in model_names(directory)]


@functools.lru_cache(maxsize=64)
def _load_cached(path: Path, _mtime_ns: int, _size: int) -> ModelContract:
    return parse_contract(read_yaml(path), path)


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml12_loader())  # noqa: S506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ContractError(
            f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            subject=str(path),
            fix="correct the YAML syntax (indentation, a missing ':' or quote)",
        ) from None


@functools.cache
def _yaml12_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 booleans: yes/no/on/off stay strings."""

    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    return Loader


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _key(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_contract(document: Any, path: Path) -> ModelContract:
    """Check ``document`` (the parsed YAML) and build the contract; ``path`` names it in errors."""

    def fail(key: str, message: str, fix: str) -> ContractError:
        return ContractError(message, subject=f"{path}: {key}", fix=fix)

    if not isinstance(document, dict):
        raise fail("(top level)", "must be a mapping of keys", "start from models/churn.yaml")
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise fail(
            _key(list(first.absolute_path)),
            f"{first.message}{more}",
            f"see the key's description in {SCHEMA_PATH.name} beside the loader",
        )
    name = document["name"]
    if name != path.stem:
        raise fail("name", f"is {name!r} but the file is {path.name}", f"rename it {name}.yaml")
    task = document["task"]
    features = tuple(_feature(item, i, fail) for i, item in enumerate(document["features"]))
    names = [f.name for f in features]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise fail("features", f"names {duplicated} more than once", "keep one entry per column")
    label, id_column = document["label"], document.get("id_column")
    for key, column in (("label", label), ("id_column", id_column)):
        if column is not None and column in names:
            raise fail(key, f"{column!r} is also a feature", f"remove {column!r} from features")
    classes, positive = _classes(document, task, fail)
    categorical = {f.name for f in features if f.is_category}
    for i, column in enumerate(document.get("slices", [])):
        if column not in categorical:
            raise fail(f"slices[{i}]", f"{column!r} is not a category feature", "name one")
    metrics = METRICS[task]
    primary = document.get("metrics", {}).get("primary", DEFAULT_PRIMARY[task])
    if primary not in metrics:
        raise fail("metrics.primary", f"{primary!r} is not a {task} metric", _metric_fix(task))
    gate_section = dict(document.get("gate", {}))
    checks = tuple(
        _check(item, i, task, fail) for i, item in enumerate(gate_section.pop("checks", []))
    )
    if not checks:
        raise fail(
            "gate.checks",
            "the gate would check no metric, so any challenger would pass",
            f"add at least one check on the primary metric, e.g. "
            f"{{metric: {primary}, threshold: ...}}",
        )
    sections = {**document, "gate": gate_section}
    overrides = {
        section: _overrides(section, sections.get(section, {}), fail) for section in SECTIONS
    }
    return ModelContract(
        name=name,
        task=task,
        label=label,
        features=features,
        primary_metric=primary,
        gate=checks,
        description=document.get("description", ""),
        owners=tuple(document.get("owners", ())),
        source=document.get("source", ""),
        id_column=id_column,
        classes=classes,
        positive_class=positive,
        slices=tuple(document.get("slices", ())),
        overrides={k: v for k, v in overrides.items() if v},
        path=path,
    )


def _metric_fix(task: str) -> str:
    return f"use one of {', '.join(METRICS[task])}"  # type: ignore[index]


def _feature(item: Mapping[str, Any], index: int, fail: Any) -> Feature:
    key = f"features[{index}]"
    kind = item["kind"]
    limits, expected = item.get("limits") or {}, item.get("expected") or {}
    categories = tuple(
        str(c).lower() if isinstance(c, bool) else str(c) for c in item.get("categories", ())
    )
    if kind == "category" and not categories:
        raise fail(f"{key}.categories", "a category feature needs its categories", "list them")
    if kind != "category":
        for field_name in ("categories", "unseen"):
            if field_name in item:
                raise fail(
                    f"{key}.{field_name}", f"only category features have it ({kind})", "remove it"
                )
    if kind in ("category", "boolean"):
        for field_name in ("limits", "expected"):
            if field_name in item:
                raise fail(f"{key}.{field_name}", f"a {kind} feature has no range", "remove it")
    low, high = limits.get("min"), limits.get("max")
    if low is not None and high is not None and low > high:
        raise fail(f"{key}.limits", f"min {low} is above max {high}", "swap them")
    e_low, e_high = expected.get("min"), expected.get("max")
    if e_low is not None and e_high is not None and e_low > e_high:
        raise fail(f"{key}.expected", f"min {e_low} is above max {e_high}", "swap them")
    if (low is not None and e_low is not None and e_low < low) or (
        high is not None and e_high is not None and e_high > high
    ):
        raise fail(f"{key}.expected", "reaches beyond the hard limits", "keep it inside limits")
    return Feature(
        name=item["name"],
        kind=kind,
        nullable=bool(item.get("nullable", False)),
        minimum=None if low is None else float(low),
        maximum=None if high is None else float(high),
        expected_min=None if e_low is None else float(e_low),
        expected_max=None if e_high is None else float(e_high),
        categories=categories,
        unseen=item.get("unseen", "reject"),
        description=item.get("description", ""),
    )


def _classes(document: Mapping[str, Any], task: str, fail: Any) -> tuple[tuple[Any, ...], Any]:
    classes = tuple(document.get("classes", ()))
    positive = document.get("positive_class")
    if task == "regression":
        for key in ("classes", "positive_class"):
            if key in document:
                raise fail(key, "a regression model has no classes", f"remove {key}")
        return (), None
    if task == "binary":
        classes = classes or (0, 1)
        if len(classes) != 2:
            raise fail(
                "classes", f"a binary model has 2 classes, not {len(classes)}", "use multiclass"
            )
        positive = classes[1] if positive is None else positive
        if positive not in classes:
            raise fail("positive_class", f"{positive!r} is not in classes", "name one of them")
        return classes, positive
    if len(classes) < 3:
        raise fail(
            "classes", "a multiclass model lists its 3 or more classes", "list them, or use binary"
        )
    if positive is not None:
        raise fail("positive_class", "only binary models have one", "remove it")
    return classes, None


def _check(item: Mapping[str, Any], index: int, task: str, fail: Any) -> GateCheck:
    key = f"gate.checks[{index}]"
    metric = item["metric"]
    if metric not in METRICS[task]:  # type: ignore[index]
        raise fail(f"{key}.metric", f"{metric!r} is not a {task} metric", _metric_fix(task))
    better = METRICS[task][metric]  # type: ignore[index]
    if item.get("greater_is_better", better) != better:
        raise fail(
            f"{key}.greater_is_better",
            f"{metric} is {'better higher' if better else 'better lower'}",
            "remove greater_is_better (it follows from the metric)",
        )
    if not {"threshold", "min_absolute_change", "min_relative_change"} & set(item):
        raise fail(
            key, "checks nothing", "give threshold, min_absolute_change or min_relative_change"
        )
    return GateCheck(
        metric=metric,
        greater_is_better=better,
        threshold=item.get("threshold"),
        min_absolute_change=item.get("min_absolute_change"),
        min_relative_change=item.get("min_relative_change"),
    )


def _overrides(section: str, values: Mapping[str, Any], fail: Any) -> dict[str, Any]:
    """``values`` checked against the fields (and declared bounds) of the section's policies."""
    fields = dict(_fields(SECTIONS[section]))
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise fail(
                f"{section}.{key}",
                "is not a setting of this section",
                f"use one of {', '.join(sorted(fields))}",
            )
        check = fields[key]
        try:
            out[key] = check(value) if check else value
        except ValueError as exc:
            raise fail(
                f"{section}.{key}", f"{value!r}: {exc}", "use a value within the bounds"
            ) from None
    for cls in SECTIONS[section]:  # a policy's own rules between or within its fields
        names = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in out.items() if k in names}
        try:
            cls(**mine)
        except ValueError as exc:
            where = f"{section}.{next(iter(mine))}" if len(mine) == 1 else section
            raise fail(where, str(exc), "change the values so the rule holds") from None
    return out


def _fields(classes: Sequence[type]) -> Iterator[tuple[str, Any]]:
    for cls in classes:
        checks = {d.name: d.check for d in declared(cls)}
        for f in dataclasses.fields(cls):
            if f.init:
                yield f.name, checks.get(f.name)
