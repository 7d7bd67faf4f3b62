"""The ci builder's HTTP against the fake GitHub API: which requests urllib3 repeats (GETs, on
lost connections, 429 and 5xx, after ``Retry-After``), how GitHub's rate limits are told from a
refused token, and that a dispatch is never sent twice blindly. Each test asserts the exact
requests (method, path, count)."""

from __future__ import annotations

import time

import pytest

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import load_settings
from mlops_steps.release.builders import ci
from tests.fake_apis import DROPPED, DispatchOutcome, FakeGitHub, Recorded, Reply
from tests.steps.release.builders.helpers import ci_build

SECONDARY_LIMIT = {"message": "You have exceeded a secondary rate limit."}


def _calls(github: FakeGitHub, requests: list[Recorded]) -> list[tuple[str, str]]:
    """``requests`` as (method, path), the fake's paths shortened to their last words: ``runs``
    (the workflow's run list), ``dispatches``, ``run/<id>``."""
    names = {
        f"{github.workflow_path}/runs": "runs",
        f"{github.workflow_path}/dispatches": "dispatches",
    }
    run_prefix = f"/repos/{github.owner_repo}/actions/runs/"
    return [(r.method, names.get(r.path) or r.path.replace(run_prefix, "run/")) for r in requests]


# After a dispatch GitHub took: the listing that does not show its run yet, the one that does,
# then the run read until it completes (queued → in_progress → completed).
FOLLOW_RUN = [("GET", "runs")] * 2 + [("GET", "run/1000")] * 2


def test_gets_are_retried_on_a_lost_connection_and_after_a_429s_retry_after(
    github: FakeGitHub,
) -> None:
    github.fail_next = [DROPPED, Reply(429, SECONDARY_LIMIT, headers={"Retry-After": "1"})]
    started = time.monotonic()
    assert ci_build(load_settings()).endswith("/runs/1000")
    assert time.monotonic() - started >= 1.0  # urllib3 waited as asked
    assert _calls(github, github.take()) == [
        *[("GET", "runs")] * 3,
        ("POST", "dispatches"),
        *FOLLOW_RUN,
    ]


@pytest.mark.parametrize("limit", ["secondary", "primary"])
def test_gets_wait_out_a_rate_limited_403(github: FakeGitHub, limit: str) -> None:
    limit_headers = (
        {"retry-after": "1"}
        if limit == "secondary"
        else {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 1)}
    )
    github.fail_next = [Reply(403, SECONDARY_LIMIT, headers=limit_headers)]
    started = time.monotonic()
    assert ci_build(load_settings()).endswith("/runs/1000")
    assert time.monotonic() - started >= 1.0
    # The 403 itself is not retried by urllib3: one listing refused, one after the wait.
    assert _calls(github, github.take()) == [
        *[("GET", "runs")] * 2,
        ("POST", "dispatches"),
        *FOLLOW_RUN,
    ]


def test_a_rate_limit_past_the_deadline_fails_at_once(github: FakeGitHub) -> None:
    reset = str(int(time.time()) + 3600)  # the deadline is 5 s away
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    github.fail_next = [Reply(403, {"message": "API rate limit exceeded"}, headers=headers)]
    started = time.monotonic()
    with pytest.raises(ci.RateLimited) as raised:  # a crash (exit 1): Airflow retries later
        ci_build(load_settings())
    assert time.monotonic() - started < 1.0
    assert not isinstance(raised.value, StepError)
    assert "rate limit (HTTP 403) lasts" in str(raised.value)
    assert "past the step's deadline (MLOPS_CI_TIMEOUT_S)" in str(raised.value)
    assert _calls(github, github.take()) == [("GET", "runs")]


def test_a_403_without_rate_limit_headers_or_a_401_is_a_refused_token(github: FakeGitHub) -> None:
    not_allowed = {"message": "Resource not accessible by integration"}
    github.fail_next = [Reply(403, not_allowed, headers={"x-ratelimit-remaining": "4999"})]
    with pytest.raises(StepError) as raised:
        ci_build(load_settings())
    assert raised.value.subject == "MLOPS_CI_TOKEN"
    assert "refused the token (HTTP 403" in str(raised.value) and raised.value.fix
    assert _calls(github, github.take()) == [("GET", "runs")]

    github.dispatch_outcomes = [DispatchOutcome(Reply(401, {"message": "Bad credentials"}))]
    with pytest.raises(StepError) as raised:
        ci_build(load_settings())
    assert raised.value.subject == "MLOPS_CI_TOKEN"
    assert "refused the token (HTTP 401" in str(raised.value)
    assert _calls(github, github.take()) == [("GET", "runs"), ("POST", "dispatches")]


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(Reply(403, SECONDARY_LIMIT, headers={"retry-after": "60"}), id="403"),
        pytest.param(Reply(429, SECONDARY_LIMIT, headers={"Retry-After": "1"}), id="429"),
    ],
)
def test_a_rate_limited_dispatch_says_so_and_is_not_repeated(
    github: FakeGitHub, refusal: Reply
) -> None:
    github.dispatch_outcomes = [DispatchOutcome(refusal)]
    with pytest.raises(ci.RateLimited) as raised:
        ci_build(load_settings())
    message = str(raised.value)
    assert f"GitHub rate-limited the workflow dispatch (HTTP {refusal.status}" in message
    assert "no build started; the token was not refused" in message
    assert _calls(github, github.take()) == [("GET", "runs"), ("POST", "dispatches")]
    assert not github.runs


@pytest.mark.parametrize(
    "lost_answer",
    [
        pytest.param(Reply(502, {"message": "Server Error"}), id="5xx"),
        pytest.param(DROPPED, id="connection-reset"),
        pytest.param(Reply(204, delay_s=1.0), id="read-timeout"),
    ],
)
def test_a_dispatch_without_a_clear_answer_is_found_by_its_request_id_not_sent_again(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, lost_answer: Reply
) -> None:
    monkeypatch.setattr(ci, "HTTP_TIMEOUT", (5.0, 0.3))
    github.dispatch_outcomes = [DispatchOutcome(lost_answer, run_started=True)]
    assert ci_build(load_settings()).endswith("/runs/1000")
    assert _calls(github, github.take()) == [("GET", "runs"), ("POST", "dispatches"), *FOLLOW_RUN]


def test_a_dispatch_that_started_nothing_is_sent_again_once_with_the_same_request_id(
    github: FakeGitHub,
) -> None:
    github.dispatch_outcomes = [DispatchOutcome(Reply(503, {"message": "Server Error"}))]
    assert ci_build(load_settings()).endswith("/runs/1000")
    requests = github.take()
    first, second = [r.json for r in requests if r.method == "POST"]
    assert first == second  # the same request id: whichever run shows up is the one
    looked = [("GET", "runs")] * ci.SETTLE_LISTINGS
    assert _calls(github, requests) == (
        [("GET", "runs"), ("POST", "dispatches"), *looked, ("POST", "dispatches"), *FOLLOW_RUN]
    )


def test_dispatches_that_stay_unclear_fail_with_a_named_error(github: FakeGitHub) -> None:
    github.dispatch_outcomes = [
        DispatchOutcome(DROPPED),
        DispatchOutcome(Reply(502, {"message": "Server Error"})),
    ]
    with pytest.raises(ci.DispatchUncertain) as raised:  # a crash (exit 1): Airflow retries
        ci_build(load_settings())
    message = str(raised.value)
    assert "2 dispatches of request v7-0123456789ab-" in message
    assert "got no clear answer (ConnectionError, HTTP 502)" in message
    assert "looks for a run of the tag before dispatching again" in message
    looked = [("GET", "runs")] * ci.SETTLE_LISTINGS
    assert _calls(github, github.take()) == (
        [("GET", "runs"), ("POST", "dispatches"), *looked, ("POST", "dispatches"), *looked]
    )
    assert not github.runs
