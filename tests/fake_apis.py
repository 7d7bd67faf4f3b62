"""Loopback stand-ins for the two remote APIs that cannot exist here: a Kubernetes API server and
the GitHub Actions API. Both record every request, so tests assert exactly what would be sent.

They implement only what the build and deploy steps call, with the servers' real paths, status
codes and (for Kubernetes) strategic-merge semantics for the fields the steps patch.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import yaml

# Lists Kubernetes merges by the "name" of each item in a strategic-merge patch (the fields the
# steps patch, plus the other named lists of a pod template).
_MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}


def strategic_merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a strategic-merge patch the way the API server does for these fields (in place)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            strategic_merge(target[key], value)
        elif (
            key in _MERGE_BY_NAME and isinstance(value, list) and isinstance(target.get(key), list)
        ):
            items = target[key]
            for item in value:
                match = next((i for i in items if i.get("name") == item.get("name")), None)
                if match is None:
                    items.append(copy.deepcopy(item))
                else:
                    strategic_merge(match, item)
        else:
            target[key] = copy.deepcopy(value)
    return target


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    """An answer beyond a status and a JSON body: extra headers, a delay before it is sent (outside
    the server's lock, so other requests go on meanwhile), or none at all (``drop``: the
    connection closes unanswered, as when a proxy resets it)."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False


DROPPED = Reply(0, drop=True)

Handler = Callable[[Recorded], tuple[int, Any] | Reply]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that hands each request to ``handle``."""

    def __init__(self, handle: Handler) -> None:
        self.requests: list[Recorded] = []
        self._handle = handle
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                recorded = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with outer._lock:
                    outer.requests.append(recorded)
                    answer = outer._handle(recorded)
                reply = answer if isinstance(answer, Reply) else Reply(*answer)
                time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                data = (
                    reply.payload
                    if isinstance(reply.payload, bytes)
                    else (b"" if reply.payload is None else json.dumps(reply.payload).encode())
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a delayed reply past its read timeout)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Recorded]:
        """The requests so far (and forget them)."""
        with self._lock:
            taken, self.requests[:] = list(self.requests), []
        return taken


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class _ServedFake:
    """A fake API served on loopback while in its ``with`` block; subclasses define ``handle``."""

    server: LoopbackServer | None = None

    def handle(self, request: Recorded) -> tuple[int, Any] | Reply:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.server = LoopbackServer(self.handle).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def take(self) -> list[Recorded]:
        """The requests so far (and forget them)."""
        assert self.server is not None
        return self.server.take()


@dataclass
class FakeKubernetes(_ServedFake):
    """Deployments (with a controller that converges their status at once, unless told not to),
    Jobs (which follow a per-Job script of statuses), pods and pod logs of one namespace."""

    namespace: str = "mlops"
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    stuck: set[str] = field(default_factory=set)  # Deployments whose new pods never get ready
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Serving pods by label selector ("k=v,k=v" sorted), as list_namespaced_pod returns them.
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    job_script: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"active": 1},
            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        ]
    )
    _job_reads: dict[str, Iterator[dict[str, Any]]] = field(default_factory=dict)

    def add_deployment(self, manifest: dict[str, Any], ready: bool = True) -> None:
        deployment = copy.deepcopy(manifest)
        deployment["metadata"]["generation"] = 1
        replicas = int(deployment["spec"].get("replicas") or 0)
        deployment["status"] = self._converged(1, replicas) if ready else {}
        self.deployments[deployment["metadata"]["name"]] = deployment

    @staticmethod
    def _converged(generation: int, replicas: int) -> dict[str, Any]:
        return {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }

    def kubeconfig(self, path: Path, token: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "steps", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "steps"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def handle(self, request: Recorded) -> tuple[int, Any]:
        parts = request.path.strip("/").split("/")
        prefix = {
            ("apis", "apps", "v1"): "apps",
            ("apis", "batch", "v1"): "batch",
            ("api", "v1"): "core",
        }.get(tuple(parts[: 3 if parts[0] == "apis" else 2]))
        rest = parts[3:] if parts[0] == "apis" else parts[2:]
        if prefix is None or len(rest) < 3 or rest[:2] != ["namespaces", self.namespace]:
            return 404, _status(404, "NotFound", f"no route {request.path}")
        kind, name, sub = rest[2], (rest[3] if len(rest) > 3 else None), rest[4:]
        if prefix == "apps" and kind == "deployments" and name:
            return self._deployment(request, name)
        if prefix == "batch" and kind == "jobs":
            return self._job(request, name, sub)
        if prefix == "core" and kind == "pods":
            if name is None:
                selector = request.query.get("labelSelector", [""])[0]
                if selector in self.pods:
                    return 200, {"kind": "PodList", "items": self.pods[selector]}
                job = selector.removeprefix("job-name=")
                return 200, {"kind": "PodList", "items": [{"metadata": {"name": f"{job}-x7k2p"}}]}
            if sub == ["log"]:
                return 200, b"error building image: push denied\n"
        return 404, _status(404, "NotFound", f"no route {request.path}")

    def _deployment(self, request: Recorded, name: str) -> tuple[int, Any]:
        deployment = self.deployments.get(name)
        if deployment is None:
            return 404, _status(404, "NotFound", f'deployments.apps "{name}" not found')
        if request.method == "PATCH":
            if request.headers.get("content-type") != "application/strategic-merge-patch+json":
                return 415, _status(415, "UnsupportedMediaType", request.headers["content-type"])
            before = copy.deepcopy(deployment["spec"])
            strategic_merge(deployment, request.json)
            if deployment["spec"] != before:
                deployment["metadata"]["generation"] += 1
        elif request.method != "GET":
            return 405, _status(405, "MethodNotAllowed", request.method)
        generation = deployment["metadata"]["generation"]
        replicas = int(deployment["spec"].get("replicas") or 0)
        if name in self.stuck:
            status = deployment["status"]
            deployment["status"] = {
                **status,
                "observedGeneration": generation,
                "updatedReplicas": 0,
            }
        else:
            deployment["status"] = self._converged(generation, replicas)
        return 200, deployment

    def _job(self, request: Recorded, name: str | None, sub: list[str]) -> tuple[int, Any]:
        if request.method == "POST" and name is None:
            job = copy.deepcopy(request.json)
            name = job["metadata"]["name"]
            if name in self.jobs:
                return 409, _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
            job["status"] = {}
            self.jobs[name] = job
            self._job_reads[name] = itertools.chain(
                self.job_script, itertools.repeat(self.job_script[-1])
            )
            return 201, job
        if name is None or name not in self.jobs:
            return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
        if request.method == "DELETE":
            del self.jobs[name]
            return 200, _status(200, "Deleted", name) | {"status": "Success"}
        if request.method == "GET":
            job = self.jobs[name]
            if name in self._job_reads:
                job["status"] = next(self._job_reads[name])
            return 200, job
        return 405, _status(405, "MethodNotAllowed", request.method)

    def set_job(self, name: str, job: dict[str, Any], status: dict[str, Any]) -> None:
        """Put a Job there as if an earlier build had created it."""
        self.jobs[name] = {**copy.deepcopy(job), "status": status}
        self._job_reads.pop(name, None)


@dataclass(frozen=True)
class DispatchOutcome:
    """How the fake answers one dispatch: ``reply`` instead of its 204, and whether the run starts
    anyway (``run_started``: GitHub took the dispatch but the answer was lost on its way back)."""

    reply: Reply
    run_started: bool = False


@dataclass
class FakeGitHub(_ServedFake):
    """``workflow_dispatch`` of one workflow and its runs. A dispatched run is listed from the
    second listing on (GitHub takes a moment), then goes queued → in_progress → completed with
    ``conclusion`` on successive reads; ``never_completes`` keeps it running."""

    owner_repo: str = "airflow-mlops/airflow-mlops"
    workflow: str = "build-serving-image.yml"
    conclusion: str = "success"
    never_completes: bool = False
    # Answers to the next requests, whatever they are, instead of serving them (an int: that
    # status with a server-error body).
    fail_next: list[int | Reply] = field(default_factory=list)
    dispatch_outcomes: list[DispatchOutcome] = field(default_factory=list)  # for the next POSTs
    runs: list[dict[str, Any]] = field(default_factory=list)
    _hidden: list[dict[str, Any]] = field(default_factory=list)

    @property
    def workflow_path(self) -> str:
        return f"/repos/{self.owner_repo}/actions/workflows/{self.workflow}"

    @property
    def dispatch_url(self) -> str:
        return f"{self.url}{self.workflow_path}/dispatches"

    def add_run(self, title: str, status: str, conclusion: str | None) -> dict[str, Any]:
        run = {
            "id": 1000 + len(self.runs) + len(self._hidden),
            "name": "build-serving-image",
            "display_title": title,
            "event": "workflow_dispatch",
            "status": status,
            "conclusion": conclusion,
        }
        run["html_url"] = f"{self.url}/{self.owner_repo}/actions/runs/{run['id']}"
        self.runs.append(run)
        return run

    def handle(self, request: Recorded) -> tuple[int, Any] | Reply:
        if self.fail_next:
            failure = self.fail_next.pop(0)
            return failure if isinstance(failure, Reply) else (failure, {"message": "Server Error"})
        if request.method == "POST" and request.path == f"{self.workflow_path}/dispatches":
            if self.dispatch_outcomes:
                outcome = self.dispatch_outcomes.pop(0)
                if outcome.run_started:
                    self._start_run(request)
                return outcome.reply
            self._start_run(request)
            return 204, None
        if request.method == "GET" and request.path == f"{self.workflow_path}/runs":
            listed = list(self.runs)
            self.runs.extend(self._hidden)
            self._hidden.clear()
            return 200, {"total_count": len(listed), "workflow_runs": listed[::-1]}
        prefix = f"/repos/{self.owner_repo}/actions/runs/"
        if request.method == "GET" and request.path.startswith(prefix):
            run_id = int(request.path.removeprefix(prefix))
            found = [r for r in self.runs if r["id"] == run_id]
            if not found:
                return 404, {"message": "Not Found"}
            run = found[0]
            if not self.never_completes and run["status"] != "completed":
                run["status"] = "in_progress" if run["status"] == "queued" else "completed"
                if run["status"] == "completed":
                    run["conclusion"] = self.conclusion
            return 200, run
        return 404, {"message": "Not Found"}

    def _start_run(self, dispatch: Recorded) -> None:
        """Queue the run a dispatch starts, titled as the workflow's run-name titles it (the next
        listing does not show it yet, the ones after it do)."""
        inputs = dispatch.json["inputs"]
        title = f"build-serving {inputs['image_tag']} {inputs['request_id']}"
        run = self.add_run(title, "queued", None)
        self.runs.remove(run)
        self._hidden.append(run)
