"""The traffic steps a release walks: every way they could skip the analysis or never end in a
promotion is refused, by the policy, the command line and the Param's schema alike."""

from __future__ import annotations

import re

import pytest

from mlops_steps.cli.main import main
from mlops_steps.core.options import param_schemas
from mlops_steps.core.policies import CanaryPolicy, traffic_steps


def test_the_default_walks_three_judged_steps_then_promotes() -> None:
    assert traffic_steps("5,25,50,100") == (5.0, 25.0, 50.0, 100.0)
    assert CanaryPolicy().weights == (0.05, 0.25, 0.5)
    assert CanaryPolicy(steps=" 12.5 , 100").weights == (0.125,)


@pytest.mark.parametrize(
    ("steps", "why"),
    [
        ("100", "judge nothing"),  # straight to 100 %: no step is ever analysed
        ("5,25,50", "must end at 100"),  # never promoted
        ("5,5,100", "must increase"),
        ("50,25,100", "must increase"),
        ("0,50,100", "above 0"),
        ("5,150", "at most 100"),
        ("five,100", "comma-separated percentages"),
    ],
)
def test_steps_that_skip_the_analysis_or_never_promote_are_refused(steps: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        CanaryPolicy(steps=steps)


def test_the_param_schema_refuses_what_is_not_a_list_of_numbers() -> None:
    pattern = param_schemas(CanaryPolicy)["canary_steps"]["pattern"]
    assert re.fullmatch(pattern, "5,25,50,100") and re.fullmatch(pattern, "12.5, 100")
    assert not re.fullmatch(pattern, "5;100") and not re.fullmatch(pattern, "")


def test_the_command_line_refuses_steps_before_anything_changes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nowhere to connect: a verb that got past its flags would fail differently.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as exited:
        main(["resolve", "--version", "3", "--steps", "50,100,100"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mlops-step resolve: error: canary steps '50,100,100' must increase"
    )
