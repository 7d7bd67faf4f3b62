"""The training DAG's served-data Params and ingest's arguments: the served window comes from the
drift event that woke the run (the extra monitoring attaches), '' for any other run, and the
rendered argv parses to the request and window the step acts on."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

import pytest

from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.options import declared
from tests.dags.helpers import load_dags, render_context

DAG_ID = "mlops_training__churn"
DRIFT_URI = "mlops://churn/drift-detected"
WINDOW = {"start": "2026-11-20T09:00:00+00:00", "end": "2026-11-20T10:00:00+00:00"}


def _event(uri: str, extra: dict[str, Any], minute: int = 0) -> Any:
    """An event as the task runner hands it to templates (Airflow 3.3's own classes)."""
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    name = uri.removeprefix("mlops://").replace("/", "_").replace("-", "_")
    return AssetEventDagRunReferenceResult(
        asset=AssetReferenceAssetEventDagRun(name=name, uri=uri, extra={}),
        extra=extra,
        source_task_id="announce_drift",
        source_dag_id="mlops_monitoring__churn",
        source_run_id="scheduled__2026-11-20T10:15:00+00:00",
        source_map_index=-1,
        source_aliases=[],
        timestamp=dt.datetime(2026, 11, 20, 10, 15, tzinfo=dt.UTC) + dt.timedelta(minutes=minute),
    )


def _accessor(*events: Any) -> Any:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    return TriggeringAssetEventsAccessor.build(events)


@pytest.fixture
def training_dag(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLOPS_PREDICTION_LOG", "/logs/{model}")
    return load_dags(monkeypatch, "kubernetes")[DAG_ID]


def _ingest_argv(dag: Any, events: Any, **params: Any) -> list[str]:
    task = dag.get_task("ingest")
    context = render_context(dag, "ingest")
    context["triggering_asset_events"] = events
    context["params"] |= params
    task.render_template_fields(context)
    return [str(a) for a in task.arguments]


def _parsed(argv: list[str]) -> argparse.Namespace:
    from mlops_steps.cli.main import build_parser
    from mlops_steps.core.settings import load_settings

    return build_parser(load_settings()).parse_args(argv)


def test_the_form_offers_the_served_request_with_the_flags_defaults(training_dag: Any) -> None:
    for item in declared(ServedDataRequest):
        schema = training_dag.params.get_param(item.param).schema
        assert training_dag.params.get_param(item.param).value == getattr(
            ServedDataRequest(), item.name
        )
        assert schema["title"]
    assert training_dag.params.get_param("training_data").schema["enum"] == [
        "auto",
        "source",
        "served",
    ]
    assert training_dag.params.get_param("min_labeled_served_rows").schema["minimum"] == 1


def test_a_run_woken_by_drift_trains_on_the_events_window(training_dag: Any) -> None:
    events = _accessor(_event(DRIFT_URI, {"window": WINDOW, "drifted_columns": ["tenure_months"]}))
    argv = _ingest_argv(training_dag, events)
    assert argv[argv.index("--served-window") + 1] == f"{WINDOW['start']}/{WINDOW['end']}"
    assert argv[argv.index("--as-of") + 1] == "2026-11-16T00:00:00+00:00"  # run_after
    args = _parsed(argv)
    from mlops_steps.core.options import from_args
    from mlops_steps.training.served import GIVEN, parse_served_window, plan_served

    window = parse_served_window(args.served_window)
    assert window is not None and window.start.isoformat() == WINDOW["start"]
    request = from_args(ServedDataRequest, args)
    assert request == ServedDataRequest()  # the form's defaults reach the step unchanged
    plan = plan_served(request, window, dt.datetime(2026, 11, 16, tzinfo=dt.UTC))
    assert plan is not None and plan.window_from == GIVEN


def test_folded_drift_events_span_their_windows(training_dag: Any) -> None:
    later = {"start": "2026-11-20T10:00:00+00:00", "end": "2026-11-20T11:00:00+00:00"}
    events = _accessor(
        _event(DRIFT_URI, {"window": later}, minute=60),
        _event(DRIFT_URI, {"window": WINDOW}),
    )
    argv = _ingest_argv(training_dag, events)
    assert argv[argv.index("--served-window") + 1] == f"{WINDOW['start']}/{later['end']}"


@pytest.mark.parametrize(
    "events",
    [
        pytest.param(_accessor, id="cron or manual run: no events"),
        pytest.param(
            lambda: _accessor(_event("mlops://churn/training-data", {"window": WINDOW})),
            id="woken by new raw data",
        ),
        pytest.param(
            lambda: _accessor(_event("mlops://other/drift-detected", {"window": WINDOW})),
            id="another model's drift",
        ),
        pytest.param(lambda: _accessor(_event(DRIFT_URI, {})), id="a drift event without window"),
        pytest.param(lambda: {}, id="a plain empty mapping"),
    ],
)
def test_any_other_run_gets_no_window_and_auto_reads_the_source(
    training_dag: Any, events: Any
) -> None:
    from mlops_steps.core.options import from_args
    from mlops_steps.training.served import parse_served_window, plan_served

    argv = _ingest_argv(training_dag, events())
    assert argv[argv.index("--served-window") + 1] == ""
    args = _parsed(argv)
    as_of = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
    window = parse_served_window(args.served_window)
    assert plan_served(from_args(ServedDataRequest, args), window, as_of) is None
    served = plan_served(ServedDataRequest(training_data="served", served_days=2), window, as_of)
    assert served is not None and served.window.start == as_of - dt.timedelta(days=2)


def test_the_macro_reads_uri_keys_and_plain_extras() -> None:
    """What the macro accepts besides Airflow's accessor: a URI string as key, dict events."""
    from mlops_provider.drift_events import drift_window

    events = {DRIFT_URI: [{"extra": {"window": WINDOW}}]}
    assert drift_window(events, DRIFT_URI) == f"{WINDOW['start']}/{WINDOW['end']}"
    assert drift_window(None, DRIFT_URI) == ""
    backwards = {
        DRIFT_URI: [{"extra": {"window": {"start": WINDOW["end"], "end": WINDOW["start"]}}}]
    }
    assert drift_window(backwards, DRIFT_URI) == ""


def test_a_form_choice_reaches_the_flags(training_dag: Any) -> None:
    argv = _ingest_argv(
        training_dag,
        _accessor(),
        training_data="served",
        served_days=3,
        reference_share=0.25,
        min_labeled_served_rows=50,
    )
    args = _parsed(argv)
    assert (args.training_data, args.served_days, args.reference_share, args.min_labeled_rows) == (
        "served",
        3.0,
        0.25,
        50,
    )


def test_ingest_reads_the_models_own_prediction_log(training_dag: Any) -> None:
    task = training_dag.get_task("ingest")
    env = {e.name: e.value for e in task.env_vars}
    assert env["MLOPS_PREDICTION_LOG"] == "/logs/churn"
    assert "MLOPS_LABELS" not in env  # unset: the step's default under its data root


def test_a_person_gives_the_window_and_a_drift_event_takes_precedence(training_dag: Any) -> None:
    """Param served_window: a manual run learns from the window a person names; a run woken by
    drift keeps the event's window whatever the Param says (the event is what it answers)."""
    import copy

    given = "2026-11-01T00:00:00+00:00/2026-11-08T00:00:00+00:00"
    unrendered = copy.deepcopy(training_dag)  # rendering replaces the task's arguments
    argv = _ingest_argv(training_dag, _accessor(), served_window=given)
    assert argv[argv.index("--served-window") + 1] == given
    assert _parsed(argv).served_window == given
    woken = _accessor(_event(DRIFT_URI, {"window": WINDOW}))
    argv = _ingest_argv(unrendered, woken, served_window=given)
    assert argv[argv.index("--served-window") + 1] == f"{WINDOW['start']}/{WINDOW['end']}"


@pytest.mark.parametrize("text", ["2026-11-01", "yesterday/today", "/2026-11-08T00:00:00"])
def test_the_form_refuses_a_window_that_is_not_start_slash_end(
    training_dag: Any, text: str
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        training_dag.params.get_param("served_window").resolve(text)


def test_a_model_that_always_learns_from_its_traffic_says_so_in_its_contract(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contract's ``training`` section carries the served request too: its defaults become
    the DAG's Params and the step's flags for that model only (churn keeps the deployment's)."""
    from mlops_steps.cli.main import build_parser
    from mlops_steps.cli.training import resolved_policy, served_defaults
    from mlops_steps.core.settings import load_settings
    from tests.fixtures.contracts import contract_copy

    path = contract_copy(tmp_path / "models", "churn_live", monkeypatch)
    path.write_text(path.read_text() + "\ntraining:\n  training_data: served\n  served_days: 14\n")
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    dags = load_dags(monkeypatch, "kubernetes")
    live, churn = dags["mlops_training__churn_live"].params, dags[DAG_ID].params
    assert (live["training_data"], live["served_days"]) == ("served", 14)
    assert (churn["training_data"], churn["served_days"]) == ("auto", 7)

    monkeypatch.setenv("MLOPS_MODEL_NAME", "churn_live")
    settings = load_settings()
    args = build_parser(settings).parse_args(["ingest", "--partition", "p"])
    request = resolved_policy(
        ServedDataRequest, args, settings, "training", served_defaults(settings)
    )
    assert (request.training_data, request.served_days) == ("served", 14)
    args = build_parser(settings).parse_args(["ingest", "--partition", "p", "--served-days", "2"])
    request = resolved_policy(
        ServedDataRequest, args, settings, "training", served_defaults(settings)
    )
    assert request.served_days == 2
