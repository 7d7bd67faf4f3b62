"""No URL with ``user:pass@`` becomes a literal environment value of a step, on either runner:
building the task fails with a named error that names the variable and never the secret."""

from __future__ import annotations

import pytest

from mlops_provider.operators.env_guard import CredentialsInUrl, refuse_credentials_in_url
from mlops_provider.operators.local import build_local_operator
from mlops_provider.operators.step import build_pod_operator, release_step
from mlops_steps.core.settings import load_settings


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:5000",
        "https://mlflow.example/path@not-userinfo",
        "ghcr.io/airflow-mlops/serving@sha256:0123",
        "git://github.com/airflow-mlops/airflow-mlops.git#refs/heads/main",
        "",
    ],
)
def test_values_without_user_info_pass_unchanged(value: str) -> None:
    assert refuse_credentials_in_url(value, source="X") == value


@pytest.mark.parametrize(
    "value", ["http://admin:hunter2@127.0.0.1:8000", "https://token@ci.example/dispatch"]
)
def test_user_info_in_a_url_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(CredentialsInUrl) as caught:
        refuse_credentials_in_url(value, source="the step environment variable X")
    message = str(caught.value)
    assert message.startswith("the step environment variable X holds credentials")
    assert "hunter2" not in message and "token@" not in message


@pytest.mark.parametrize("build", [build_pod_operator, build_local_operator])
def test_a_setting_with_credentials_fails_the_build_on_both_runners(
    build: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_SERVICE_URL", "http://admin:hunter2@127.0.0.1:8000")
    spec = release_step("promote", "promote", ["--version", "7"], settings=load_settings())
    with pytest.raises(CredentialsInUrl, match="MLOPS_SERVICE_URL holds credentials"):
        build(spec)  # type: ignore[operator]
