"""The analysis policy's cross check (max_failed_rounds at most rounds), declared once in
core/policies/release.py and enforced by the policy itself: the command line refuses it as a
usage error naming both flags and values, before a verb does anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from mlops_steps.cli.main import main
from mlops_steps.core.options import (
    AtMost,
    CrossFieldError,
    check_cross_fields,
    cross_checked,
    from_env,
    option,
)
from mlops_steps.core.policies import AnalysisPolicy


def test_the_policy_refuses_more_failed_rounds_than_rounds() -> None:
    with pytest.raises(CrossFieldError) as raised:
        AnalysisPolicy(rounds=2, max_failed_rounds=3)
    assert str(raised.value) == (
        "max_failed_rounds (--max-failed-rounds, Param max_failed_rounds) 3 is above rounds "
        "(--rounds, Param analysis_rounds) 2: a run whose every round failed would still pass"
    )
    assert AnalysisPolicy(rounds=2, max_failed_rounds=2).max_failed_rounds == 2
    assert cross_checked(AnalysisPolicy) == ["rounds", "max_failed_rounds"]


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--version", "3", "--data-partition", "p1", "--image-ref", "img:v3"],
        ["resolve", "--version", "3"],  # the deployment run's first step task
    ],
    ids=["analyze", "resolve"],
)
def test_the_command_line_refuses_it_naming_both_flags(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nowhere to connect: a verb that got past its flags would fail differently.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLOPS_SERVICE_URL", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--rounds", "1", "--max-failed-rounds", "2"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        f"mlops-step {argv[0]}: error: --max-failed-rounds (Param max_failed_rounds) 2 is above "
        "--rounds (Param analysis_rounds) 1: a run whose every round failed would still pass"
    )


@dataclass(frozen=True)
class _Window:
    low: int = option(1, help="low", env="MLOPS_TEST_LOW")
    high: int = option(5, help="high", env="MLOPS_TEST_HIGH")
    cross_checks: ClassVar[tuple[AtMost, ...]] = (AtMost("low", "high", why="empty window"),)

    def __post_init__(self) -> None:
        check_cross_fields(self)


class _ConfigError(Exception):
    pass


def test_environment_defaults_that_break_a_rule_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_TEST_LOW", "9")
    with pytest.raises(_ConfigError, match=r"low \(--low, Param low\) 9 is above high"):
        from_env(_Window, _ConfigError)
    monkeypatch.setenv("MLOPS_TEST_HIGH", "9")
    assert from_env(_Window, _ConfigError) == _Window(9, 9)
