"""``mlops-step <verb>``: the one command line every pipeline step runs through.

Both runners execute exactly this: the local runner as a subprocess, the Kubernetes runner as the
task pod's command. A step prints its result as the last stdout line (``MLOPS_RESULT {json}``) and,
inside a pod that has the Airflow XCom volume, also writes it where the XCom sidecar reads it.
Exit codes: 0 done, 1 crash (retry may help), 2 rejected input or decision (a retry repeats it).
The model a verb works on is ``--model NAME`` (before or after the verb), else
``$MLOPS_MODEL_NAME``, else churn; its contract is loaded before the verb runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlops_steps.cli import contract, monitoring, release, scoring, training
from mlops_steps.cli.base import MODEL_HELP, verb_adder
from mlops_steps.core.errors import (
    EXIT_CRASH,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_SKIPPED,
    NothingToDo,
    ServiceUnavailable,
    StepError,
)
from mlops_steps.core.results import emit_result
from mlops_steps.core.settings import ConfigError, Settings, load_settings

log = logging.getLogger("mlops_steps")
MODEL_ENV = "MLOPS_MODEL_NAME"


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    """Every verb, with defaults from ``settings`` (flags derive from core/policies/)."""
    parser = argparse.ArgumentParser(prog="mlops-step", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--model", metavar="NAME", default=argparse.SUPPRESS, help=MODEL_HELP)
    verb = verb_adder(parser.add_subparsers(dest="verb", required=True, metavar="VERB"))
    for stage in (training, release, monitoring, scoring, contract):
        stage.add_verbs(verb, settings)
    return parser


def model_option(argv: Sequence[str]) -> str | None:
    """The ``--model`` given anywhere in ``argv`` (None when absent): read before the settings,
    which (and whose defaults for every flag) depend on the model."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--model")
    known, _ = pre.parse_known_args(list(argv))
    return str(known.model) if known.model else None


@contextmanager
def _model_env(name: str | None) -> Iterator[None]:
    """``--model`` wins over the environment: it is set as MLOPS_MODEL_NAME while the verb runs
    (settings and anything the step starts read it there), and restored afterwards."""
    if name is None:
        yield
        return
    before = os.environ.get(MODEL_ENV)
    os.environ[MODEL_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MODEL_ENV, None)
        else:
            os.environ[MODEL_ENV] = before


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with _model_env(model_option(argv)):
        return _run(argv)


def _run(argv: list[str]) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return EXIT_REJECTED
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    detail = getattr(args, "partition", None) or getattr(args, "contract_action", "")
    log.info("mlops-step %s %s", args.verb, detail)
    from mlops_steps.common.dataplane import working_copy  # a step module: not at parse time

    public: Callable[[str], str] = str
    try:
        with working_copy(settings) as store:
            public = store.public if store is not None else str
            code, result = _run_verb(args, settings, public)
            # What the step decided outlives it (a refusal's reports too); a crash publishes
            # nothing, so its retry starts from what the store held before.
            if store is not None and code != EXIT_CRASH:
                store.publish()
    except ServiceUnavailable as exc:
        log.error("%s (exit %d: a retry may succeed)", public(exc.render()), EXIT_CRASH)
        return EXIT_CRASH
    except StepError as exc:  # the store refused what the step fetched or published
        log.error("%s", public(exc.render()))
        return EXIT_REJECTED
    if result is not None:
        emit_result(json.loads(public(json.dumps(result, default=str))))
    return code


def _run_verb(
    args: argparse.Namespace, settings: Settings, public: Callable[[str], str]
) -> tuple[int, dict[str, Any] | None]:
    """The verb's exit code and the result to print; ``public`` names working-copy paths as
    the store's URIs in what the step reports."""
    try:
        if args.needs_contract:
            from mlops_steps.contract.loader import load_contract

            load_contract(settings.model_name)
        result = args.handler(args, settings)
    except ServiceUnavailable:
        raise
    except NothingToDo as exc:
        log.warning("nothing to do: %s", public(exc.render()))
        return EXIT_SKIPPED, {"skipped": True, "reason": exc.render()}
    except StepError as exc:
        log.error("%s", public(exc.render()))
        return EXIT_REJECTED, None
    except Exception:
        log.exception("step %s crashed", args.verb)
        return EXIT_CRASH, None
    return EXIT_OK, result
