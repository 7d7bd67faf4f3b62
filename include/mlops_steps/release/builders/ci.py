"""The ``ci`` builder: a GitHub Actions ``workflow_dispatch``, followed to its run's end.

``MLOPS_CI_DISPATCH_URL`` is the workflow's ``.../actions/workflows/<file>/dispatches`` endpoint
and ``MLOPS_CI_TOKEN`` the bearer token (kept in the session's headers, never logged).

Contract with ``deploy/ci/build-serving-image.yml``: the workflow takes the inputs model_name,
model_version, code_sha, image_tag and request_id, and its ``run-name`` contains the image tag and
the request id as space-separated words. A dispatch answers 204 with no body, so the run-name is
how the step finds the run it started, and a run of the same tag already queued, running or
successful, which it waits on instead of dispatching another. A successful run means the tag was
pushed.

HTTP calls are retried on 5xx and lost connections (the dispatch too).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import ImageBuildSettings, Settings
from mlops_steps.release.builders.base import BuildRequest, Built, utc_now

log = logging.getLogger("mlops_steps")

CI_TOKEN_ENV = "MLOPS_CI_TOKEN"  # noqa: S105 (the variable's name, not a token)
DISPATCH_URL_ENV = "MLOPS_CI_DISPATCH_URL"
HTTP_TIMEOUT = (10.0, 30.0)  # connect, read
HTTP_ATTEMPTS = 4
CLOCK_SKEW_S = 120.0


def _checked(method: str, url: str, response: Any) -> Any:
    """``response`` if it succeeded, else the error its status means."""
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
    raise StepError(f"HTTP {status}: {detail}", subject=f"{method} {url}")


class _Actions:
    """The GitHub Actions endpoints of one workflow, within the step's deadline, with retries on
    5xx and lost connections."""

    def __init__(self, dispatch_url: str, token: str, poll_s: float, deadline: float) -> None:
        import requests

        self.dispatch_url = dispatch_url
        self.runs_url = dispatch_url.removesuffix("/dispatches") + "/runs"
        self.repo_url = dispatch_url.split("/actions/workflows/", 1)[0]
        self.poll_s = poll_s
        self.deadline = deadline  # time.monotonic()
        self.session = requests.Session()
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
        token = os.environ.get(CI_TOKEN_ENV, "").strip()
        if not token:
            raise StepError(
                "is not set; the ci builder needs a token to dispatch the build workflow",
                subject=CI_TOKEN_ENV,
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

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        problem = ""
        for attempt in range(HTTP_ATTEMPTS):
            try:
                response = self.session.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = type(exc).__name__
            else:
                if response.status_code < 500:
                    return _checked(method, url, response)
                problem = f"HTTP {response.status_code}"
            if attempt + 1 < HTTP_ATTEMPTS:
                log.warning("CI API %s %s: %s; retrying", method, url, problem)
                time.sleep(min(self.poll_s, 1.0) * 2**attempt)
        # Transient by nature: a crash (exit 1) so Airflow retries the step.
        raise RuntimeError(f"CI API {method} {url} failed {HTTP_ATTEMPTS} times: {problem}")

    def runs(self, since: float) -> list[dict[str, Any]]:
        """The workflow's dispatched runs created since ``since`` (epoch seconds), newest first."""
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        params = {"event": "workflow_dispatch", "created": f">={created}", "per_page": "100"}
        body = self.request("GET", self.runs_url, params=params).json()
        return list(body.get("workflow_runs") or [])

    def run(self, run_id: int) -> dict[str, Any]:
        body: dict[str, Any] = self.request("GET", f"{self.repo_url}/actions/runs/{run_id}").json()
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
    """Dispatch the build and find its run."""
    request_id = body["inputs"]["request_id"]
    log.info("CI: dispatching %s (request %s)", api.dispatch_url, request_id)
    api.request("POST", api.dispatch_url, json=body)
    return _dispatched_run(api, request_id, since)


def _find_run(api: _Actions, request_id: str, since: float) -> dict[str, Any] | None:
    """The run named with ``request_id``, listing every poll interval until the deadline; None if
    it did not show up."""
    while True:
        found = [r for r in api.runs(since) if _titled(r, request_id)]
        if found:
            return found[0]
        if time.monotonic() >= api.deadline:
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
