"""The batch scoring DAG: its Params are the step's flags (same defaults and bounds, each passed
back to its flag), it runs only when triggered unless a schedule is set, and a deployment's
``MLOPS_BATCH_SCORING_*`` default reaches the form and the flag together."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import re
from typing import Any

import pytest

from mlops_steps.core.policies import BatchScoringPolicy
from tests.dags.helpers import load_dags, rendered

DAG_ID = "mlops_batch_scoring__churn"
PARAM_IN_TEMPLATE = re.compile(r"^\{\{ params\.(\w+)\b")


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    for name in ("SCHEDULE", "INPUT", "OUTPUT", "CHUNK_ROWS"):
        monkeypatch.delenv(f"MLOPS_BATCH_SCORING_{name}", raising=False)


def _flags() -> dict[str, argparse.Action]:
    from mlops_steps.cli.main import build_parser
    from mlops_steps.core.settings import load_settings

    parser = build_parser(load_settings())
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {flag: a for a in verbs.choices["score-batch"]._actions for flag in a.option_strings}


def _param_flags(task: Any) -> dict[str, str]:
    return {
        flag: match.group(1)
        for flag, value in itertools.pairwise(task.arguments)
        if flag.startswith("--") and (match := PARAM_IN_TEMPLATE.match(str(value)))
    }


def test_every_param_is_a_flag_with_its_default_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = load_dags(monkeypatch, "kubernetes")[DAG_ID]
    task = dag.get_task("score_batch")
    assert task.arguments[:3] == ["score-batch", "--partition", task.arguments[2]]
    pairs = _param_flags(task)
    assert (
        sorted(pairs.values())
        == sorted(dag.params)
        == sorted(f.name for f in dataclasses.fields(BatchScoringPolicy))
    )
    flags = _flags()
    argv = [str(a) for a in rendered(task).arguments]
    assert argv[argv.index("--partition") + 1] == "20261116T000000"  # the logical date
    for flag, param in pairs.items():
        action, schema = flags[flag], dag.params.get_param(param).schema
        assert callable(action.type)
        assert action.type(argv[argv.index(flag) + 1]) == action.default, flag
        for keyword, outside in (("minimum", -1), ("maximum", 1)):
            if keyword in schema:
                with pytest.raises(argparse.ArgumentTypeError):
                    action.type(str(schema[keyword] + outside))
    # What the form's pattern refuses, the flag refuses too.
    assert re.fullmatch(dag.params.get_param("model_ref").schema["pattern"], "7")
    model_ref = flags["--model-ref"].type
    assert callable(model_ref)
    for bad in ("0", "-1", "champion!", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            model_ref(bad)


def test_it_runs_when_triggered_unless_a_schedule_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = load_dags(monkeypatch, "local")[DAG_ID]
    assert dag.timetable.__class__.__name__ == "NullTimetable"
    assert set(dag.tags) == {"mlops", "batch_scoring", "churn"}
    assert [alert.name for alert in dag.deadline] == ["batch_scoring_overdue"]
    monkeypatch.setenv("MLOPS_BATCH_SCORING_SCHEDULE", "0 2 * * *")
    assert load_dags(monkeypatch, "local")[DAG_ID].timetable.expression == "0 2 * * *"


def test_a_deployment_default_reaches_the_form_and_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops_steps.cli.scoring import _policy

    monkeypatch.setenv("AIRFLOW_VAR_MLOPS_BATCH_SCORING_INPUT", "/data/exports/{model}.parquet")
    monkeypatch.setenv("MLOPS_BATCH_SCORING_CHUNK_ROWS", "50000")
    params = load_dags(monkeypatch, "local")[DAG_ID].params
    assert params.get_param("input_uri").value == "/data/exports/{model}.parquet"
    assert params.get_param("chunk_rows").value == 50000
    flags = _flags()
    untouched = argparse.Namespace(**{a.dest: a.default for a in flags.values()})
    policy = _policy(untouched)
    assert (policy.input_uri, policy.chunk_rows) == ("/data/exports/{model}.parquet", 50000)
    given = argparse.Namespace(**{**vars(untouched), "chunk_rows": 700})
    assert _policy(given).chunk_rows == 700  # a run's own value wins
