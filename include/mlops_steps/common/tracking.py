"""The MLflow side of the steps: finding the server, runs and model versions.

Importing MLflow costs a step process about 3 s, paid again by every task. :func:`connect`
answers with a :class:`TrackingClient` that imports it only for the first call that needs
MLflow's own client: on an http(s) tracking server, the champion's version (``validate``) and a
run's tags (``gate``) are one plain REST request each, so those steps never load MLflow.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, NoReturn

from mlops_steps.core.errors import StepError
from mlops_steps.core.sections import MlflowVersionSkew
from mlops_steps.core.settings import get_settings

if TYPE_CHECKING:
    import requests

_HEALTH_TIMEOUT_S = 10.0
CHAMPION, CHALLENGER = "champion", "challenger"
#: Error codes of an alias, or a model, that does not exist (a normal answer, not a failure).
_NO_SUCH_VERSION = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
#: MLflow client settings the plain REST path does not implement (token auth, TLS options):
#: with any of them set, every call goes through MLflow's own client.
_CLIENT_ONLY_ENV = (
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
)  # fmt: skip


class MlflowVersionMismatch(StepError):
    """The MLflow client in this step and the tracking server are further apart than allowed:
    the REST API and the stored formats (logged models, registry fields) differ across majors."""


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise StepError(
            "is not set",
            subject="MLFLOW_TRACKING_URI",
            fix="define the Airflow connection mlflow_default (the runners pass it to the step)",
        )
    return uri


def _release(version: str, *, whose: str, uri: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``3.17.2`` or ``3.18.0.dev0``."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        raise MlflowVersionMismatch(
            f"the {whose} version {version[:80]!r} is not a version number, so client and "
            "server cannot be compared",
            subject=uri,
            fix="point MLFLOW_TRACKING_URI at an MLflow tracking server (GET /version answers "
            "its version)",
        )
    return int(match[1]), int(match[2])


def check_versions(
    client_version: str, server_version: str, allowed: MlflowVersionSkew, *, uri: str
) -> None:
    """Refuse a client/server pair further apart than ``allowed`` (same major, or same
    major.minor); the error names both versions and how to line them up."""
    client, server = (
        _release(client_version, whose="client", uri=uri),
        _release(server_version, whose="server", uri=uri),
    )
    same = client[0] == server[0] if allowed == "major" else client == server
    if not same:
        level = "major version" if allowed == "major" else "major.minor version"
        raise MlflowVersionMismatch(
            f"MLflow client {client_version} and server {server_version} differ in their "
            f"{level} (MLOPS_MLFLOW_VERSION_SKEW={allowed})",
            subject=uri,
            fix=f"install mlflow=={server_version} where the steps run (the task image or the "
            f"worker's environment), or upgrade the server to {client_version}",
        )


def _auth() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    return (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None


def _get(uri: str, path: str) -> Any:
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}{path}", timeout=_HEALTH_TIMEOUT_S, auth=_auth())
    except requests.RequestException as exc:
        raise StepError(
            f"MLflow server is unreachable ({type(exc).__name__})",
            subject=uri,
            fix="start the server (make mlflow) or fix the mlflow_default connection",
        ) from None


@functools.cache
def _checked_server(uri: str, allowed: MlflowVersionSkew, client_version: str) -> str:
    """Health and version of the server at ``uri``, checked once per process (the cache keeps
    only successes: a failed check raises and is asked again next time)."""
    response = _get(uri, "/health")
    if response.status_code != 200:
        raise StepError(f"MLflow health check answered HTTP {response.status_code}", subject=uri)
    response = _get(uri, "/version")
    if response.status_code != 200:
        raise MlflowVersionMismatch(
            f"GET /version answered HTTP {response.status_code}, so the server's MLflow version "
            f"cannot be compared with the client's ({client_version})",
            subject=uri,
            fix="let the proxy in front of MLflow pass GET /version (and /health) through",
        )
    server_version = response.text.strip()
    check_versions(client_version, server_version, allowed, uri=uri)
    return server_version


def client_version() -> str:
    """The MLflow client's version, without importing MLflow when it is not loaded yet (the
    distribution is ``mlflow``, or ``mlflow-skinny`` in the task image)."""
    loaded = sys.modules.get("mlflow")
    if loaded is not None:
        return str(loaded.__version__)
    for distribution in ("mlflow", "mlflow-skinny"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    import mlflow

    return str(mlflow.__version__)


def connect() -> TrackingClient:
    """A client for a server that answered its health check and runs an MLflow version this
    client may talk to (MLOPS_MLFLOW_VERSION_SKEW); both checked once per process."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _checked_server(uri, get_settings().mlflow_version_skew, client_version())
    if "mlflow" in sys.modules:  # already paid for: the fluent API points at this server now
        sys.modules["mlflow"].set_tracking_uri(uri)
    return TrackingClient(uri)


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version as the REST API describes it, under the attribute names of MLflow's
    ``ModelVersion`` (tags a dict, aliases a list), so callers read either the same way."""

    name: str
    version: str
    source: str = ""
    run_id: str = ""
    status: str = ""
    status_message: str = ""
    current_stage: str = ""
    description: str = ""
    user_id: str = ""
    run_link: str = ""
    model_id: str | None = None
    creation_timestamp: int | None = None
    last_updated_timestamp: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RegisteredVersion:
        return cls(
            name=str(body["name"]),
            version=str(body["version"]),
            **{key: str(body.get(key) or "") for key in _TEXT_FIELDS},
            model_id=body.get("model_id"),
            creation_timestamp=body.get("creation_timestamp"),
            last_updated_timestamp=body.get("last_updated_timestamp"),
            tags={t["key"]: t.get("value", "") for t in body.get("tags") or []},
            aliases=list(body.get("aliases") or []),
        )


_TEXT_FIELDS = (
    "source", "run_id", "status", "status_message", "current_stage", "description", "user_id",
    "run_link",
)  # fmt: skip


class TrackingClient:
    """MLflow's ``MlflowClient`` for ``tracking_uri``, created (MLflow imported) by the first
    call that needs it. :meth:`get_model_version_by_alias` and :meth:`set_tag` go to an http(s)
    server as plain REST requests, with MLflow's timeout and retry settings; their errors are
    MLflow's exceptions, as the client would raise them."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None
        self._session: requests.Session | None = None

    @property
    def speaks_rest(self) -> bool:
        """True when the plain REST path applies (an http(s) server, no client-only setting)."""
        return self.tracking_uri.startswith(("http://", "https://")) and not any(
            os.environ.get(name) for name in _CLIENT_ONLY_ENV
        )

    @property
    def mlflow_client(self) -> Any:
        """MLflow's own client (the first use imports MLflow)."""
        if self._client is None:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.mlflow_client, name)

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if not self.speaks_rest:
            return self.mlflow_client.get_model_version_by_alias(name, alias)
        found = self._version_by_alias(name, alias)
        if not isinstance(found, RegisteredVersion):
            _raise_mlflow_error(*found)
        return found

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> None:
        if not self.speaks_rest or synchronous is not None:
            self.mlflow_client.set_tag(run_id, key, value, synchronous=synchronous)
            return
        status, body = self._request(
            "POST", "runs/set-tag", json={"run_id": run_id, "key": key, "value": str(value)}
        )
        if status != 200:
            _raise_mlflow_error(status, body, "runs/set-tag")

    def _version_by_alias(
        self, name: str, alias: str
    ) -> RegisteredVersion | tuple[int, dict[str, Any], str]:
        """The version, or the failed answer (status, body, path) to report."""
        path = "registered-models/alias"
        status, body = self._request("GET", path, params={"name": name, "alias": alias})
        if status == 200 and isinstance(body.get("model_version"), dict):
            return RegisteredVersion.from_json(body["model_version"])
        return status, body, path

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body or {}) of one call, retried as MLflow's client retries."""
        import requests

        url = f"{self.tracking_uri.rstrip('/')}/api/2.0/mlflow/{path}"
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") or 120)
        try:
            response = self._http().request(method, url, timeout=timeout, auth=_auth(), **kwargs)
        except requests.RequestException as exc:
            from mlflow.exceptions import MlflowException

            raise MlflowException(f"API request to {url} failed with exception {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return response.status_code, body if isinstance(body, dict) else {}

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util import Retry

            retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") or 7)
            retry = Retry(
                total=retries,
                connect=retries,
                read=retries,
                status=retries,
                backoff_factor=float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR") or 2),
                backoff_max=float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_MAX") or 60),
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=None,  # both calls are idempotent
                raise_on_status=False,
            )
            self._session = requests.Session()
            self._session.mount("http://", HTTPAdapter(max_retries=retry))
            self._session.mount("https://", HTTPAdapter(max_retries=retry))
        return self._session


def _raise_mlflow_error(status: int, body: dict[str, Any], path: str) -> NoReturn:
    """MLflow's exception for a failed REST answer (MLflow is imported only here)."""
    from mlflow.exceptions import MlflowException, RestException

    if "error_code" in body:
        raise RestException(body)
    raise MlflowException(
        f"API request to endpoint /api/2.0/mlflow/{path} failed with error code {status} != "
        f"200. Response body: '{body.get('message', '')}'"
    )


def version_by_alias(client: Any, model_name: str, alias: str) -> Any | None:
    """The model version behind ``alias``, or None when the model or the alias does not exist."""
    if isinstance(client, TrackingClient) and client.speaks_rest:
        found = client._version_by_alias(model_name, alias)
        if isinstance(found, RegisteredVersion):
            return found
        if found[1].get("error_code") in _NO_SUCH_VERSION:
            return None
        _raise_mlflow_error(*found)
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _NO_SUCH_VERSION:
            return None
        raise
