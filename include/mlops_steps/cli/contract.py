"""``mlops-step contract infer|check``: draft a model's contract from its data, and check one.

``infer`` prints only the path it wrote on stdout (scripts capture it); its notes go to stderr.
``check`` prints what the model's DAGs will be. Neither needs a contract to exist beforehand
(they make and check them), so main() does not load one first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlops_steps.cli.base import AddVerb, add_model_option
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings

DEFAULT_SAMPLE_ROWS = 100_000


def _model_given() -> str | None:
    """The model named by ``--model`` or MLOPS_MODEL_NAME (main() puts ``--model`` there)."""
    return os.environ.get("MLOPS_MODEL_NAME", "").strip() or None


def _source_for_file(uri: str) -> str:
    """A local path as an absolute path: the training DAG reads it from another directory."""
    if urlparse(uri).scheme in {"", "file"} and not uri.startswith("file://"):
        return str(Path(uri).expanduser().resolve())
    return uri


def _infer(args: argparse.Namespace, settings: Settings) -> None:
    from mlops_steps.contract.infer import draft_contract, write_contract
    from mlops_steps.core.policies import SourceRequest
    from mlops_steps.training.sources import read_source

    name = args.name or _model_given()
    if not name:
        raise StepError(
            "names no model", subject="contract infer", fix="pass --name NAME (or --model NAME)"
        )
    if args.sample_rows < 1:
        raise StepError("must be at least 1", subject="--sample-rows", fix="e.g. 100000")
    frame = read_source(SourceRequest(uri=args.source))
    total = len(frame)
    if total > args.sample_rows:
        frame = frame.sample(n=args.sample_rows, random_state=0).sort_index()
    draft = draft_contract(
        frame,
        name=name,
        label=args.label,
        task=args.task,
        id_column=args.id,
        source=_source_for_file(args.source),
        total_rows=total,
    )
    path, contract = write_contract(draft, name, force=args.force)
    for note in draft.notes:
        sys.stderr.write(f"note: {note}\n")
    sys.stderr.write(
        f"wrote {contract.name}: {contract.task}, {len(contract.features)} features from "
        f"{len(frame)} of {total} rows. Next: settle each DECIDE in the file, run "
        f"`mlops-step contract check {name}`, then `airflow dags trigger "
        f"{contract.dag_id('training')}`\n"
    )
    sys.stdout.write(f"{path}\n")


def _describe_check(check: Any) -> str:
    better = check.greater_is_better
    parts = []
    if check.threshold is not None:
        parts.append(f"{check.metric} {'>=' if better else '<='} {check.threshold:g}")
    changes = (
        (check.min_absolute_change, lambda c: f"{abs(c):g}"),
        (check.min_relative_change, lambda c: f"{abs(c) * 100:g} %"),
    )
    for change, amount in changes:
        if change is not None:
            bound = "at least" if change >= 0 else "at most"
            word = "better" if change >= 0 else "worse"
            parts.append(f"{bound} {amount(change)} {word} than the champion")
    return ", ".join(parts)


def describe(contract: ModelContract, settings: Settings) -> list[str]:
    """What the DAG factory builds for ``contract``, as lines of text."""
    from collections import Counter

    schedules = contract.policy("schedules", settings.schedules)
    gate = contract.policy("gate", settings.gate)
    kinds = Counter(f.kind for f in contract.features)
    counts = ", ".join(f"{kinds[k]} {k}" for k in ("integer", "float", "category", "boolean"))
    nullable = sum(f.nullable for f in contract.features)
    order = "higher" if contract.greater_is_better else "lower"
    uri = contract.asset_uri
    lines = [
        f"{contract.path}: valid",
        f"model     {contract.name}: {contract.description or '(no description)'}",
        f"task      {contract.task}; label {contract.label}"
        + (f"; id column {contract.id_column}" if contract.id_column else "; id from row content"),
    ]
    if contract.task == "binary":
        lines.append(
            f"classes   {', '.join(contract.class_labels)}; the score is "
            f"P({contract.label} == {contract.positive_class})"
        )
    elif contract.task == "multiclass":
        lines.append(f"classes   {', '.join(contract.class_labels)}")
    lines += [
        f"features  {len(contract.features)}: {counts}; {nullable} nullable",
        f"metrics   primary {contract.primary_metric} ({order} is better); "
        f"all: {', '.join(contract.metrics)}",
        "gate      " + ("; ".join(_describe_check(c) for c in contract.gate) or "no checks"),
        f"          latency <= {gate.max_latency_ms:g} ms per row; "
        f"champion collapse <= {gate.max_champion_collapse:g}",
    ]
    if contract.slices:
        lines.append(f"slices    {', '.join(contract.slices)}")

    def cron(value: str | None) -> str:
        return f"cron {value!r}" if value else "no cron"

    lines += [
        "DAGs",
        f"  {contract.dag_id('training')}: {cron(schedules.training)}, and on "
        f"{uri('training-data')} | {uri('drift-detected')}; produces {uri('challenger')}",
        f"  {contract.dag_id('deployment')}: on {uri('release-candidate')} (the registry "
        f"webhook or watcher); produces {uri('deployments')}",
        f"  {contract.dag_id('monitoring')}: {cron(schedules.monitoring)}; "
        f"produces {uri('drift-detected')}",
        f"  {contract.dag_id('rollback')}: manual; produces {uri('deployments')}",
    ]
    return lines


def _check(args: argparse.Namespace, settings: Settings) -> None:
    from mlops_steps.contract.loader import load_contract

    contract = load_contract(args.name or settings.model_name)
    sys.stdout.write("\n".join(describe(contract, settings)) + "\n")
    text = contract.path.read_text(encoding="utf-8") if contract.path else ""
    undecided = sum("DECIDE" in line for line in text.splitlines())
    if undecided:
        sys.stderr.write(
            f"note: {undecided} line(s) still say DECIDE in {contract.path}: settle them "
            "(then remove the word) before the model serves anyone\n"
        )


def _contract(args: argparse.Namespace, settings: Settings) -> None:
    args.contract_handler(args, settings)


def add_verbs(verb: AddVerb, settings: Settings) -> None:
    from mlops_steps.contract.model import TASKS

    parser = verb(
        "contract",
        _contract,
        "Draft (infer) or check a model contract ($MLOPS_MODELS_DIR/NAME.yaml).",
        partition=False,
        needs_contract=False,
    )
    actions = parser.add_subparsers(dest="contract_action", required=True, metavar="ACTION")
    infer = actions.add_parser(
        "infer",
        help="draft NAME.yaml from a sample of the data; prints its path",
        description="Draft $MLOPS_MODELS_DIR/NAME.yaml from a sample of the data: kinds, "
        "nullability, the observed range as the expected range, category vocabularies, the "
        "label's classes and a default gate; lines marked DECIDE are for you. Prints the path.",
    )
    infer.add_argument("--source", required=True, help="a path, file://, s3:// or https:// URI")
    infer.add_argument("--label", required=True, help="the column the model predicts")
    infer.add_argument("--id", default=None, help="the row id column (default: none)")
    infer.add_argument("--task", required=True, choices=TASKS)
    infer.add_argument("--name", default=None, help="the model's name (default: --model)")
    infer.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help=f"rows sampled from the source (default {DEFAULT_SAMPLE_ROWS})",
    )
    infer.add_argument("--force", action="store_true", help="replace an existing file")
    infer.set_defaults(contract_handler=_infer)
    check = actions.add_parser(
        "check",
        help="validate NAME.yaml and print what its DAGs will be",
        description="Validate a model contract and print what its DAGs will be.",
    )
    check.add_argument("name", nargs="?", default=None, help="the model (default: --model)")
    check.set_defaults(contract_handler=_check)
    for action in (infer, check):
        add_model_option(action)
