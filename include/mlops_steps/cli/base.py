"""What every stage's verbs share: how a verb is declared and how its handler is called."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Protocol

from mlops_steps.core.settings import Settings

#: A verb's handler: its result dict (printed as the MLOPS_RESULT line), or None when the verb
#: printed its own answer (``contract infer`` prints only the path it wrote).
Handler = Callable[[argparse.Namespace, Settings], dict[str, Any] | None]

MODEL_HELP = "the model (its contract models/NAME.yaml); default $MLOPS_MODEL_NAME, else churn"


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model NAME`` after the verb too (``mlops-step train --model iris ...``). main() reads
    it before the settings are loaded; here it only has to be accepted (SUPPRESS: a sub-parser's
    default would overwrite the value given before the verb)."""
    parser.add_argument("--model", metavar="NAME", default=argparse.SUPPRESS, help=MODEL_HELP)


class AddVerb(Protocol):
    """Declares ``mlops-step <name>``; a verb that acts on a data partition gets --partition.

    ``needs_contract``: main() loads the model's contract before the handler runs, so an
    unknown model or a broken file stops every step with the contract's message (exit 2)."""

    def __call__(
        self,
        name: str,
        handler: Handler,
        help_text: str,
        *,
        partition: bool = True,
        needs_contract: bool = True,
    ) -> argparse.ArgumentParser: ...


def verb_adder(verbs: Any) -> AddVerb:
    """An :class:`AddVerb` over argparse's sub-parsers."""

    def add(
        name: str,
        handler: Handler,
        help_text: str,
        *,
        partition: bool = True,
        needs_contract: bool = True,
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = verbs.add_parser(name, help=help_text, description=help_text)
        if partition:
            sub.add_argument("--partition", required=True, help="partition key of the logical run")
        add_model_option(sub)
        sub.set_defaults(handler=handler, needs_contract=needs_contract)
        return sub

    return add
