"""What every pipeline of one model shares: its contract, its settings and its assets.

A broken contract is not built here: :func:`model_pipelines` leaves it out, and
``dags/mlops_contracts.py`` raises :class:`ContractErrors` naming every broken file, key and fix.

Why a fifth DAG file rather than raising in the four pipeline files: a DAG file that raises loses
*every* DAG it would have defined (the importer discards the module), so one bad contract would
stop the training, releases and monitoring of every other model. Here the broken model's DAGs
are absent (it cannot run on a contract nobody can read: fail closed), the other models keep
theirs, and the import error on ``mlops_contracts.py`` is the one message an Airflow user reads.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mlops_steps.contract.loader import ContractError, load_contract, model_names, models_dir
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.options import declared
from mlops_steps.core.sections import for_model
from mlops_steps.core.settings import Settings, get_settings

_Policy = TypeVar("_Policy")
_Built = TypeVar("_Built")


@dataclass(frozen=True)
class ModelPipeline:
    """One model as its DAGs see it: the contract and the settings named for the model."""

    contract: ModelContract
    settings: Settings

    @property
    def model(self) -> str:
        return self.contract.name

    def dag_id(self, kind: str) -> str:
        """``mlops_<kind>__<model>`` (kind: training, deployment, monitoring, rollback)."""
        return f"mlops_{kind}__{self.model}"

    def asset(self, what: str) -> Any:
        """The model's asset ``what`` (``<model>_<what>``, ``mlops://<model>/<what>``): the same
        name and URI in every DAG that produces or consumes it."""
        from airflow.sdk import Asset

        return Asset(
            name=f"{self.model}_{what.replace('-', '_')}", uri=f"mlops://{self.model}/{what}"
        )

    def tags(self, kind: str) -> list[str]:
        return ["mlops", kind, self.model]

    def traffic_env(self) -> dict[str, str]:
        """Where a step finds the model's served traffic and delayed labels (``{model}`` in the
        settings: each model's service logs, and its labels land, under their own prefix)."""
        env = {"MLOPS_PREDICTION_LOG": for_model(self.settings.prediction_log, self.model)}
        if self.settings.labels_template:  # unset: the step's own default under MLOPS_DATA_ROOT
            env["MLOPS_LABELS"] = for_model(self.settings.labels_template, self.model)
        return env


class ContractErrors(ContractError):
    """One or more contracts in the models directory cannot be read (each named with its key
    and fix); their models have no DAGs until they are fixed."""


def model_pipelines(settings: Settings | None = None) -> tuple[list[ModelPipeline], list[str]]:
    """Every model with a readable contract, with its settings; and one message per broken
    contract (file, key, fix)."""
    base = settings or get_settings()
    pipelines, broken = [], []
    for name in model_names():
        try:
            contract = load_contract(name)
        except ContractError as exc:
            broken.append(str(exc))
            continue
        pipelines.append(ModelPipeline(contract=contract, settings=base.for_model(contract.name)))
    return pipelines, broken


def check_contracts() -> list[str]:
    """The models with a readable contract; :class:`ContractErrors` when any is broken or there
    is none at all (no model would have DAGs)."""
    pipelines, broken = model_pipelines()
    if broken:
        raise ContractErrors(
            f"{len(broken)} broken model contract(s): their models have no DAGs until fixed "
            "(the other models' DAGs are unaffected)\n"
            + "\n".join(f"  - {message}" for message in broken),
            subject=str(models_dir()),
        )
    if not pipelines:
        raise ContractErrors(
            "holds no model contract (*.yaml), so no model has DAGs",
            subject=str(models_dir()),
            fix="write one with `mlops-step contract infer ...`, or set MLOPS_MODELS_DIR to the "
            "directory of your models",
        )
    return [p.model for p in pipelines]


def build_all(build: Callable[[ModelPipeline], _Built]) -> Iterator[_Built]:
    """``build`` for every model with a readable contract (the DAG files' loop)."""
    pipelines, _ = model_pipelines()
    for pipeline in pipelines:
        yield build(pipeline)


def policy(pipeline: ModelPipeline, section: str, base: _Policy) -> _Policy:
    """``base`` (the settings' policy defaults) with the model's overrides of ``section``."""
    return pipeline.contract.policy(section, base)


def gate_policy(contract: ModelContract, base: _Policy) -> _Policy:
    """The gate Params' defaults: the settings' thresholds with the contract's ``gate``
    overrides, and the contract's metric checks written out as the ``checks`` JSON, so the
    trigger form shows the checks a run will be judged by (a person edits them there)."""
    gate = contract.policy("gate", base)
    if "checks" not in {item.name for item in declared(type(base))} or not contract.gate:
        return gate
    checks = [
        {k: v for k, v in check.to_dict().items() if k != "greater_is_better"}
        for check in contract.gate
    ]
    return dataclasses.replace(gate, checks=json.dumps(checks))  # type: ignore[type-var]


def trigger_params(policy_cls: type, *, leave_out: Mapping[str, str] | None = None) -> list[str]:
    """The declared options of ``policy_cls`` a trigger form offers: all but ``leave_out``
    (name -> why it is not a per-run choice)."""
    return [d.name for d in declared(policy_cls) if d.name not in (leave_out or {})]
