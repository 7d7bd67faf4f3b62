"""The acts of the lifecycle demo (scripts/lifecycle.py), in order: a first release, a drifted
partition whose labels moved (validation stops it), drift in served traffic that retrains and
releases again."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

import requests

from lifecycle_report import latest_window, partition_dir, registry, serving
from lifecycle_runs import follow, newest_run, release, run_ids, run_url, trigger, woken_by
from lifecycle_stack import ACTS, MODEL, MONITORING, TRAINING, Stack, say, stage
from processes import wait_for


def serve_drifted_customers(stack: Stack, partition: tuple[str, str], rows: int) -> int:
    """The drifted period's customers reach the service, 100 per /predict/batch request."""

    from mlops_steps.contract.loader import load_contract

    contract = load_contract(MODEL)

    def logged() -> int:
        return stack.data.logged_rows(MODEL)

    frame = stack.data.read_parquet(*partition, "data.parquet").head(rows)
    records = json.loads(frame.loc[:, list(contract.feature_names)].to_json(orient="records"))
    ids = frame[contract.id_column or "row_id"].astype(str).tolist()
    before = logged()
    url = f"{stack.service_url}/predict/batch"
    with requests.Session() as session:
        for start in range(0, len(records), 100):
            batch = slice(start, start + 100)
            body = {"instances": records[batch], "entity_ids": ids[batch]}
            session.post(url, json=body, timeout=60).raise_for_status()
    wait_for("the prediction log to be flushed", lambda: logged() >= before + len(records), 60)
    time.sleep(1)  # the monitoring window ends at its run's logical date: after the last row
    return len(records)


def land_delayed_labels(stack: Stack, partition: tuple[str, str], rows: int) -> str:
    """The served customers' outcomes, known later: one CSV in the model's label landing place,
    keyed by entity id (the customer id the service was given), with the time each became known.
    The generator drew them with the features, so they are the truth."""
    import pandas as pd

    from mlops_steps.contract.loader import load_contract

    contract = load_contract(MODEL)
    frame = stack.data.read_parquet(*partition, "data.parquet").head(rows)
    known_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    outcomes = pd.DataFrame(
        {
            "entity_id": frame[contract.id_column or "row_id"].astype(str),
            contract.label: frame[contract.label],
            "label_time": known_at,
        }
    )
    return stack.data.write_labels(
        MODEL, f"outcomes-{known_at[:10]}.csv", outcomes.to_csv(index=False)
    )


def retrained_on(stack: Stack, partition: tuple[str, str]) -> dict[str, Any]:
    """What the retraining partition was built from (its manifest) and how the retrained model
    and the champion scored on both hold-outs (its evaluation)."""
    manifest = stack.data.read_json(*partition, "manifest.json")
    evaluation = stack.data.read_json(*partition, "results", "evaluate.json")
    return {"served": manifest.get("served"), "holdouts": evaluation.get("holdouts") or {}}


def stopped_by(stack: Stack, partition: tuple[str, str]) -> dict[str, str]:
    """Which check stopped a training run, from its partition's results: the comparison with
    the champion's data in ``validate`` (a label shift) or the ``gate``."""

    def read(step: str) -> dict[str, Any]:
        return stack.data.read_json(*partition, "results", f"{step}.json")

    validation, gate = read("validate"), read("gate")
    shift = validation.get("shift") or {}
    if shift.get("refused"):
        return {"step": "validate", "reason": shift.get("summary", "label shift"),
                "report": shift.get("report_html", "")}  # fmt: skip
    if validation and not validation.get("success"):
        failed = "; ".join(validation.get("failed_expectations", [])) or "see its task log"
        return {
            "step": "validate",
            "reason": failed,
            "report": str(validation.get("data_docs_index")),
        }
    return {"step": "gate", "reason": gate.get("reason", "see the UI"),
            "report": stack.data.uri(*partition, "results", "gate.json")}  # fmt: skip


def synthetic_source(model: str) -> bool:
    """Whether ``model`` trains on the synthetic generator (which can inject drift)."""
    from mlops_steps.contract.loader import load_contract

    return load_contract(model).source.startswith("synthetic")


def story(stack: Stack, started: float, args: argparse.Namespace) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    stage(f"2/{ACTS}  Train, register a challenger, release it (approval, canary, promotion)",
          started)  # fmt: skip
    trained = trigger(stack, TRAINING, "demo_1_reference_data", {"rows": args.rows})
    if follow(stack, TRAINING, trained) != "success":
        raise RuntimeError(
            f"the first training run failed; see {run_url(stack, TRAINING, trained)}"
        )
    aliases, _ = registry(stack)
    first = aliases["challenger"]
    say(f"registered {MODEL} v{first} as @challenger", indent=4)
    facts["release_1"] = release(stack, first)
    aliases, _ = registry(stack)
    say(f"aliases {aliases}; the service: {serving(stack)}", indent=4)
    if not synthetic_source(MODEL):
        say(f"{MODEL} trains on its own source: the drift acts use the synthetic churn source, "
            "so its story ends with this release", indent=4)  # fmt: skip
        return facts

    stage(f"3/{ACTS}  Train on drifted data whose labels moved: validation must stop it", started)
    drifted = trigger(stack, TRAINING, "demo_2_drifted_data",
                      {"rows": args.rows, "drift": 0.8, "seed": 7})  # fmt: skip
    state = follow(stack, TRAINING, drifted)
    partition = partition_dir(stack, drifted)
    stopped = stopped_by(stack, partition)
    say(f"run {state}; stopped by {stopped['step']}: {stopped['reason']}", indent=4)
    after, _ = registry(stack)
    if state != "failed" or after != aliases:
        raise RuntimeError(f"the drifted model was not stopped: run {state}, aliases {after}")
    say(f"aliases unchanged {after}; the service: {serving(stack)}", indent=4)
    facts["drifted_run"], facts["stopped"] = drifted, stopped

    facts |= close_the_loop(stack, started, args, partition)
    return facts


def close_the_loop(
    stack: Stack, started: float, args: argparse.Namespace, partition: tuple[str, str]
) -> dict[str, Any]:
    """Act 4: the drifted customers are served and labelled later; monitoring sees the drift and
    the champion's drop, the drift event retrains on them, the retrained version is released."""
    facts: dict[str, Any] = {}
    stage(f"4/{ACTS}  Drifted customers reach the service; monitoring sees it and retrains",
          started)  # fmt: skip
    served = serve_drifted_customers(stack, partition, args.traffic_rows)
    say(f"served {served} drifted customers through /predict/batch (prediction log flushed)",
        indent=4)  # fmt: skip
    labels = land_delayed_labels(stack, partition, served)
    say(f"their outcomes arrived later: {served} delayed labels in {labels}", indent=4)
    trainings = run_ids(stack, TRAINING)
    monitored = trigger(stack, MONITORING, "demo_3_monitoring", {"window_hours": 1})
    if follow(stack, MONITORING, monitored) != "success":
        raise RuntimeError(f"monitoring failed; see {run_url(stack, MONITORING, monitored)}")
    verdict = latest_window(stack)
    facts["monitoring_report"] = verdict.get("dir", "(none written)")
    say(f"drifted columns: {', '.join(verdict.get('drifted_columns', [])) or 'none'}; "
        f"rows judged: {verdict.get('rows', {}).get('champion')}", indent=4)  # fmt: skip
    performance = verdict.get("performance") or {}
    if performance.get("judged"):
        metric = performance["primary_metric"]
        say(f"the champion on {performance['labeled_rows']} labelled served rows: {metric} "
            f"{performance[metric]:.4f} (trained {performance[f'reference_{metric}']:.4f}): "
            f"{'DEGRADED' if performance['degraded'] else 'ok'}", indent=4)  # fmt: skip
    else:
        say(f"performance not judged: {verdict.get('performance_reason')}", indent=4)
    say(f"reports: {facts['monitoring_report']}", indent=4)
    if not verdict.get("drift_detected"):
        raise RuntimeError("monitoring saw no drift in the drifted traffic; see its task log")
    retrain = wait_for(
        "the drift event to start a training run",
        lambda: newest_run(stack, TRAINING, trainings),
        120,
        stack.airflow.logs,
    )
    retrain_id = retrain["dag_run_id"]
    say(f"retraining run {retrain_id} ({retrain['run_type']}), woken by:", indent=4)
    for event in woken_by(stack, TRAINING, retrain_id):
        say(f"- {event}", indent=6)
    if follow(stack, TRAINING, retrain_id) != "success":
        raise RuntimeError(f"retraining failed; see {run_url(stack, TRAINING, retrain_id)}")
    learnt = retrained_on(stack, partition_dir(stack, retrain_id))
    facts["feedback"] = feedback = learnt_margin(learnt, args.min_margin)
    say(feedback["provenance"], indent=4)
    say(feedback["verdict"], indent=4)
    aliases, _ = registry(stack)
    retrained = aliases["challenger"]
    feedback |= {"retrained": retrained, "champion": aliases["champion"]}
    say(f"registered {MODEL} v{retrained} as @challenger", indent=4)
    facts["retrain"] = retrain_id
    facts["release_2"] = release(stack, retrained)
    return facts


def learnt_margin(learnt: dict[str, Any], min_margin: float) -> dict[str, Any]:
    """The retrained model against the champion on the drifted (recent) hold-out and on the
    reference one; fails the demo unless it wins on the drifted hold-out by ``min_margin``."""
    served, holdouts = learnt["served"], learnt["holdouts"]
    if not served or "recent" not in holdouts:
        raise RuntimeError("the retraining run did not train on the served, labelled traffic")
    recent, reference = holdouts["recent"], holdouts.get("reference") or {}
    metric = recent["comparison"]["metric"]
    new, old = recent["challenger"][metric], recent["champion"][metric]
    rows = served["rows"]
    facts = {
        "metric": metric,
        "recent": {
            "retrained": new,
            "champion": old,
            "rows": recent["rows"],
            "ci": [recent["comparison"][f"{metric}_delta_ci_{end}"] for end in ("low", "high")],
        },
        "reference": {k: (reference.get(k) or {}).get(metric) for k in ("challenger", "champion")},
        "margin": new - old,
        "provenance": (
            f"trained on {rows['labelled']} served, labelled rows (join rate "
            f"{served['join']['join_rate']:.0%}) + {rows['reference']} of the champion's "
            f"training rows; the drift event's window {served['window']['start']} .. "
            f"{served['window']['end']}"
        ),
    }
    facts["verdict"] = (
        f"{metric} on the drifted hold-out ({recent['rows']} rows): retrained {new:.4f} vs "
        f"champion {old:.4f} (+{new - old:.4f}); on the reference hold-out: retrained "
        f"{facts['reference']['challenger']:.4f} vs champion {facts['reference']['champion']:.4f}"
    )
    if new - old < min_margin:
        raise RuntimeError(
            f"the retrained model does not beat the champion on the drifted hold-out by "
            f"{min_margin}: {facts['verdict']}"
        )
    return facts
