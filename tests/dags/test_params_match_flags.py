"""One source for every default: each DAG Param a step task passes to a flag has the flag's
default and bounds, because both are derived from the step's policy (core/policies/)."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from mlops_steps.contract.loader import load_contract
from tests.dags.helpers import load_dags, rendered

PARAM_IN_TEMPLATE = re.compile(r"^\{\{ params\.(\w+)\b")


def _flags_of(verb: str) -> dict[str, argparse.Action]:
    from mlops_steps.cli.main import build_parser
    from mlops_steps.core.settings import load_settings

    parser = build_parser(load_settings())
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {flag: a for a in verbs.choices[verb]._actions for flag in a.option_strings}


def _param_flags(task: Any) -> list[tuple[str, str]]:
    """(flag, Param) for every ``--flag {{ params.x }}`` pair in the task's unrendered argv."""
    argv = list(task.arguments)
    return [
        (flag, match.group(1))
        for flag, value in itertools.pairwise(argv)
        if flag.startswith("--") and (match := PARAM_IN_TEMPLATE.match(str(value)))
    ]


@pytest.mark.parametrize(
    "dag_id", ["mlops_training__churn", "mlops_deployment__churn", "mlops_monitoring__churn"]
)
def test_every_param_a_step_reads_has_the_flags_default_and_bounds(
    dag_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    # Pods carry the argv as a templated field of their own (the local runner renders the same).
    dag = load_dags(monkeypatch, "kubernetes")[dag_id]
    checked = 0
    for task in dag.tasks:
        if not hasattr(task, "arguments") or not task.arguments:
            continue
        verb, flags = task.arguments[0], _flags_of(task.arguments[0])
        pairs = _param_flags(task)
        rendered_argv = list(rendered(task).arguments)  # renders the task in place
        for flag, param in pairs:
            action = flags[flag]
            parse: Callable[[str], Any] = action.type if callable(action.type) else str
            schema = dag.params.get_param(param).schema
            value = rendered_argv[rendered_argv.index(flag) + 1]
            # The rendered default parses to the flag's own default (a flag left unset so that
            # its use can be told apart, like monitor's --window-hours, documents it instead)...
            if param == "gate_checks":
                # Empty on the command line means the contract's checks; the form shows them.
                written = [check.to_dict() for check in load_contract("churn").gate]
                for check in written:
                    del check["greater_is_better"]  # follows from the metric
                assert json.loads(value) == written, value
            elif action.default is None and (
                value != "auto" or "(default: auto" in str(action.help)  # "auto" as a choice
            ):
                documented = re.search(rf"\(default: {re.escape(value)}[;)]", str(action.help))
                assert documented, (verb, flag, action.help)
            else:
                assert parse(value) == action.default, (verb, flag, param, value)
            # ...and what the form refuses, the flag refuses too.
            for keyword, outside in (("minimum", -1e-9), ("maximum", 1e-9)):
                if keyword in schema:
                    with pytest.raises(argparse.ArgumentTypeError):
                        parse(str(schema[keyword] + outside))
            if "exclusiveMinimum" in schema:
                with pytest.raises(argparse.ArgumentTypeError):
                    parse(str(schema["exclusiveMinimum"]))
            for choice in schema.get("enum", []):
                parse(str(choice))
            checked += 1
    assert checked >= 5, f"{dag_id}: only {checked} Params reach a flag"


def test_a_changed_default_moves_flag_and_param_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment-wide default (an env-backed Airflow Variable) reaches both at once."""
    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_DEFAULT_ROWS", "30000")
    monkeypatch.setenv("MLOPS_CANARY_STEPS", "10,50,100")
    dags = load_dags(monkeypatch, "local")
    assert dags["mlops_training__churn"].params.get_param("rows").value == 30000
    assert dags["mlops_deployment__churn"].params.get_param("canary_steps").value == "10,50,100"
    assert _flags_of("ingest")["--rows"].default == 30000
    assert _flags_of("canary")["--steps"].default == "10,50,100"


def test_params_that_break_a_cross_check_stop_the_runs_first_step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Airflow 3.3 validates each Param alone (the trigger form and the API accept analysis
    rounds 1 with max failed rounds 2), so the first step task, resolve, reads both Params and
    refuses the pair before anything changes."""
    from mlops_steps.cli.main import main
    from tests.dags.helpers import render_context

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:9")
    dag = load_dags(monkeypatch, "local")["mlops_deployment__churn"]
    conf = {"analysis_rounds": 1, "max_failed_rounds": 2}
    params = copy.deepcopy(dag.params)
    params.update(conf)
    assert params.validate()["max_failed_rounds"] == 2  # what Airflow allows

    (first,) = [t for t in dag.tasks if not t.upstream_task_ids]
    (resolve,) = first.downstream_list
    assert resolve.task_id == "resolve"
    context = render_context(dag, "resolve")
    context["params"] |= conf
    resolve.render_template_fields(context)
    argv = [str(a) for a in resolve.arguments]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max-failed-rounds (Param max_failed_rounds) 2 is above --rounds" in error
    assert "(Param analysis_rounds) 1" in error
