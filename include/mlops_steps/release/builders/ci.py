"""The ``ci`` builder: a GitHub Actions ``workflow_dispatch``, followed to its run's end.

``MLOPS_CI_DISPATCH_URL`` is the workflow's ``.../actions/workflows/<file>/dispatches`` endpoint
and ``MLOPS_CI_TOKEN`` the bearer token (kept in the session's headers, never logged).

Contract with ``deploy/ci/build-serving-image.yml``: the workflow takes the inputs model_name,
model_version, code_sha, image_tag and request_id, and its ``run-name`` contains the image tag and
the request id as space-separated words. A dispatch answers 204 with no body, so the run-name is
how the step finds the run it started, and a run of the same tag already queued, running or
successful, which it waits on instead of dispatching another. A successful run means the tag was
pushed.

HTTP, over one ``requests.Session``:

* GETs are retried by urllib3 (:func:`_retry_policy`) on lost connections, read timeouts, 429 and
  5xx, honouring ``Retry-After``.
* GitHub's rate limits (a 429, or a 403 with ``x-ratelimit-remaining: 0`` or ``retry-after``) are
  waited out on GETs while the step's deadline allows. Any other 401 or 403 is a refused token.
* The dispatch POST is never repeated blindly: a second one could start a second build. When its
  outcome is unknown (timeout, lost connection, 5xx) the step first looks for the run named with
  its request id, and dispatches again (same request id, once) only when none shows up.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.sections import ImageBuildSettings
from mlops_steps.core.settings import Settings, required_secret
from mlops_steps.release.builders.base import BuildRequest, Built, utc_now

if TYPE_CHECKING:
    from requests import Response
    from urllib3.util import Retry

log = logging.getLogger("mlops_steps")

CI_TOKEN_ENV = "MLOPS_CI_TOKEN"  # noqa: S105 (the variable's name, not a token)
DISPATCH_URL_ENV = "MLOPS_CI_DISPATCH_URL"
HTTP_TIMEOUT = (10.0, 30.0)  # connect, read
GET_RETRIES = 3  # after the first attempt
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 60
RATE_LIMIT_WAIT_S = 60.0  # GitHub: without a retry-after, wait at least a minute
DISPATCH_ATTEMPTS = 2
SETTLE_LISTINGS = 4  # a poll interval apart: time for a dispatched run to be listed
CLOCK_SKEW_S = 120.0


class CiUnavailable(RuntimeError):
    """GitHub gave no usable answer. A crash (exit 1), so Airflow retries the step; the retry
    waits on a queued, running or successful run of the tag before it dispatches anything."""


class RateLimited(CiUnavailable):
    """GitHub's rate limit outlasts the step's deadline, or turned the dispatch away."""


class DispatchUncertain(CiUnavailable):
    """The dispatches got no clear answer and no run named with their request id appeared."""


def _retry_policy(backoff_s: float) -> Retry:
    """urllib3's retries: GETs only (POST is not in ``allowed_methods``, so neither a status nor a
    lost answer repeats a dispatch; a connection that never opened is retried for any method,
    since nothing was sent). Back-off doubles from ``backoff_s`` up to BACKOFF_MAX_S; a
    ``Retry-After`` (on 429 and 503) replaces it, up to RETRY_AFTER_MAX_S."""
    from urllib3.util import Retry

    return Retry(
        total=GET_RETRIES,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=backoff_s,
        backoff_max=BACKOFF_MAX_S,
        respect_retry_after_header=True,
        retry_after_max=RETRY_AFTER_MAX_S,
        raise_on_status=False,  # the last answer is classified by _checked
    )


def _rate_limit_wait_s(response: Response) -> float | None:
    """How long GitHub asks to wait when ``response`` is a rate limit: a 429, or a 403 with
    ``x-ratelimit-remaining: 0`` (the primary limit, lifted at ``x-ratelimit-reset``) or with a
    ``retry-after`` (the secondary limit); None for any other answer. At least a second."""
    headers = response.headers
    retry_after = headers.get("retry-after", "").strip()
    exhausted = headers.get("x-ratelimit-remaining", "").strip() == "0"
    status = response.status_code
    if status != 429 and not (status == 403 and (retry_after or exhausted)):
        return None
    reset = headers.get("x-ratelimit-reset", "").strip()
    if retry_after.isdigit():
        wait_s = float(retry_after)
    elif exhausted and reset.isdigit():
        wait_s = float(reset) - time.time()
    else:
        wait_s = RATE_LIMIT_WAIT_S
    return max(1.0, wait_s)


def _attempts(response: Response) -> int:
    """How many times urllib3 sent the request that got ``response``."""
    retries = getattr(response.raw, "retries", None)
    return 1 + len(retries.history) if retries is not None else 1


def _checked(method: str, url: str, response: Response) -> Response:
    """``response`` if it succeeded, else the error its status means (rate limits are handled
    before this)."""
    status = response.status_code
    if status < 400:
        return response
    detail = response.text[:300]
    if status in (401, 403):
        raise StepError(
            f"the CI API refused the token (HTTP {status}: {detail})",
            subject=CI_TOKEN_ENV,
            fix="use a token allowed to run workflows (actions: write) on the repository",
        )
    if status == 404:
        raise StepError(
            f"not found (HTTP 404) on {method} {url}",
            subject=DISPATCH_URL_ENV,
            fix="check the repository and workflow file name (and that the token can see them)",
        )
    if status >= 500:
        raise CiUnavailable(
            f"CI API {method} {url} failed {_attempts(response)} times: HTTP {status}"
        )
    raise StepError(f"HTTP {status}: {detail}", subject=f"{method} {url}")


class _Actions:
    """The GitHub Actions endpoints of one workflow, within the step's deadline."""

    def __init__(self, dispatch_url: str, token: str, poll_s: float, deadline: float) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.dispatch_url = dispatch_url
        self.runs_url = dispatch_url.removesuffix("/dispatches") + "/runs"
        self.repo_url = dispatch_url.split("/actions/workflows/", 1)[0]
        self.poll_s = poll_s
        self.deadline = deadline  # time.monotonic()
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry_policy(min(poll_s, 1.0)))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "airflow-mlops-build-image",
            }
        )

    @classmethod
    def from_settings(cls, build: ImageBuildSettings, deadline: float) -> _Actions:
        if not build.ci_dispatch_url:
            raise StepError(
                "is not set; the ci builder dispatches a workflow there",
                subject=DISPATCH_URL_ENV,
                fix="set it to .../actions/workflows/FILE/dispatches, "
                "or MLOPS_IMAGE_BUILDER=bundle",
            )
        token = required_secret(
            CI_TOKEN_ENV,
            needed_for="the ci builder needs a token to dispatch the build workflow",
            fix="export it (in pods: the Secret key token of MLOPS_K8S_CI_SECRET)",
        )
        dispatch_url = build.ci_dispatch_url.rstrip("/")
        if not dispatch_url.endswith("/dispatches"):
            raise StepError(
                "is not a workflow dispatch URL",
                subject=DISPATCH_URL_ENV,
                fix="use https://api.github.com/repos/OWNER/REPO/actions/workflows/FILE/dispatches",
            )
        return cls(dispatch_url, token, build.ci_poll_interval_s, deadline)

    def get(self, url: str, params: dict[str, str] | None = None) -> Any:
        """The JSON answer of a GET, after the session's retries and any rate-limit wait."""
        import requests

        while True:
            try:
                response = self.session.get(url, params=params, timeout=HTTP_TIMEOUT)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise CiUnavailable(
                    f"CI API GET {url} failed {GET_RETRIES + 1} times: {type(exc).__name__}"
                ) from None
            wait_s = _rate_limit_wait_s(response)
            if wait_s is None:
                return _checked("GET", url, response).json()
            status = response.status_code
            if time.monotonic() + wait_s > self.deadline:
                raise RateLimited(
                    f"CI API GET {url}: GitHub's rate limit (HTTP {status}) lasts {wait_s:.0f}s "
                    "more, past the step's deadline (MLOPS_CI_TIMEOUT_S)"
                )
            log.warning("CI API GET %s: rate-limited (HTTP %d); waiting %.0fs", url, status, wait_s)
            time.sleep(wait_s)

    def dispatch(self, body: dict[str, Any]) -> str | None:
        """POST the dispatch once: None when GitHub took it, else why its outcome is unknown (a
        run may have started). A refusal raises (then nothing started)."""
        import requests

        try:
            response = self.session.post(self.dispatch_url, json=body, timeout=HTTP_TIMEOUT)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return type(exc).__name__
        if response.status_code >= 500:
            return f"HTTP {response.status_code}"
        wait_s = _rate_limit_wait_s(response)
        if wait_s is not None:
            raise RateLimited(
                f"GitHub rate-limited the workflow dispatch (HTTP {response.status_code}, "
                f"retry in {wait_s:.0f}s), so no build started; the token was not refused. "
                "Airflow's retry of the step dispatches again."
            )
        _checked("POST", self.dispatch_url, response)
        return None

    def runs(self, since: float) -> list[dict[str, Any]]:
        """The workflow's dispatched runs created since ``since`` (epoch seconds), newest first."""
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        params = {"event": "workflow_dispatch", "created": f">={created}", "per_page": "100"}
        return list(self.get(self.runs_url, params).get("workflow_runs") or [])

    def run(self, run_id: int) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"{self.repo_url}/actions/runs/{run_id}")
        return body


def _titled(run: dict[str, Any], word: str) -> bool:
    title = f"{run.get('display_title') or ''} {run.get('name') or ''}"
    return word in title.split()


class CiBuilder:
    """Builds in GitHub Actions; the run's page is the build URL."""

    remote = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, request: BuildRequest) -> Built:
        build = self.settings.image_build
        api = _Actions.from_settings(build, time.monotonic() + build.ci_timeout_s)
        started = time.time()
        # A build of this tag already queued, running or done: wait on it instead of another one.
        earlier = [
            r
            for r in api.runs(started - build.ci_timeout_s)
            if _titled(r, request.tag)
            and (r.get("status") != "completed" or r.get("conclusion") == "success")
        ]
        if earlier:
            run = max(earlier, key=lambda r: int(r["id"]))
            log.info(
                "CI: attaching to run %s of %s (%s)", run["id"], request.tag, run.get("html_url")
            )
        else:
            body = {
                "ref": build.ci_ref,
                "inputs": {
                    "model_name": request.model_name,
                    "model_version": request.version,
                    "code_sha": request.code_sha,
                    "image_tag": request.tag,
                    "request_id": f"{request.tag}-{uuid.uuid4().hex[:8]}",
                },
            }
            run = _dispatch(api, body, since=started - CLOCK_SKEW_S)
        url = _wait_for_run(api, run, build.ci_timeout_s)
        return Built(built_now=True, built_at=utc_now(), build_url=url)


def _dispatch(api: _Actions, body: dict[str, Any], since: float) -> dict[str, Any]:
    """Dispatch the build and find its run. A dispatch without a clear answer may have started
    one: look for it first, and dispatch again only when it does not show up."""
    request_id = body["inputs"]["request_id"]
    problems: list[str] = []
    for _ in range(DISPATCH_ATTEMPTS):
        log.info("CI: dispatching %s (request %s)", api.dispatch_url, request_id)
        problem = api.dispatch(body)
        if problem is None:
            return _dispatched_run(api, request_id, since)
        problems.append(problem)
        log.warning(
            "CI: no clear answer to the dispatch of request %s (%s); looking for its run",
            request_id,
            problem,
        )
        run = _find_run(api, request_id, since, listings=SETTLE_LISTINGS)
        if run is not None:
            return run
    raise DispatchUncertain(
        f"{len(problems)} dispatches of request {request_id} to {api.dispatch_url} got no clear "
        f"answer ({', '.join(problems)}) and no run named with it appeared after "
        f"{SETTLE_LISTINGS} listings each. Airflow's retry of the step looks for a run of the tag "
        "before dispatching again."
    )


def _find_run(
    api: _Actions, request_id: str, since: float, listings: int | None = None
) -> dict[str, Any] | None:
    """The run named with ``request_id``, listing every poll interval until the deadline (or
    ``listings`` times); None if it did not show up."""
    listed = 0
    while True:
        found = [r for r in api.runs(since) if _titled(r, request_id)]
        listed += 1
        if found:
            return found[0]
        if listed == listings or time.monotonic() >= api.deadline:
            return None
        time.sleep(api.poll_s)


def _dispatched_run(api: _Actions, request_id: str, since: float) -> dict[str, Any]:
    run = _find_run(api, request_id, since)
    if run is None:
        raise StepError(
            f"no workflow run named with request id {request_id} appeared",
            subject=DISPATCH_URL_ENV,
            fix="the workflow's run-name must contain inputs.image_tag and inputs.request_id "
            "(see deploy/ci/build-serving-image.yml); raise MLOPS_CI_TIMEOUT_S if CI is slow",
        )
    return run


def _wait_for_run(api: _Actions, run: dict[str, Any], timeout_s: float) -> str:
    """Poll the run until it completes; its page when it succeeded."""
    url = str(run.get("html_url") or f"{api.repo_url}/actions/runs/{run['id']}")
    while run.get("status") != "completed":
        if time.monotonic() >= api.deadline:
            raise StepError(
                f"the CI build did not finish within {timeout_s:g}s (status {run.get('status')})",
                subject=url,
                fix="look at the run; raise MLOPS_CI_TIMEOUT_S if builds are slow",
            )
        time.sleep(api.poll_s)
        run = api.run(int(run["id"]))
    if run.get("conclusion") != "success":
        raise StepError(
            f"the CI build ended with conclusion {run.get('conclusion')!r}",
            subject=url,
            fix="open the run's log, fix the build, and run the step again",
        )
    log.info("CI: build succeeded: %s", url)
    return url
