"""DAG Params derived from the step policies, so a trigger form offers exactly what the step's
flags accept (one declaration in ``mlops_steps.core.policies``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Param

from mlops_steps.core.options import cli_template, param_schemas


def dag_params(
    policy_cls: type, defaults: Any = None, *, only: Sequence[str] | None = None
) -> dict[str, Param]:
    """A typed Param per declared field of ``policy_cls`` (defaults from ``defaults``)."""
    params = {}
    for name, schema in param_schemas(policy_cls, defaults, only=only).items():
        default = schema.pop("default")
        params[name] = Param(default, **schema)
    return params


def step_args(policy_cls: type, *, only: Sequence[str] | None = None) -> tuple[str, ...]:
    """The step's flags, each rendered from its Param (the counterpart of :func:`dag_params`)."""
    return cli_template(policy_cls, only=only)
