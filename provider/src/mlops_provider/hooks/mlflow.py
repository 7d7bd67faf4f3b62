"""MLflow hook: owns the ``mlflow_default`` connection and speaks MLflow's REST API over HTTP.

The Airflow image does not carry the mlflow package; everything here is plain ``requests`` (in
workers) or ``httpx`` (in the triggerer's event loop; httpx is a dependency of Airflow itself).
Both paths share one request builder and one error mapping, so a sensor poking in a worker and a
trigger polling in the triggerer see the same dicts and the same errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Connection

#: HTTP statuses worth retrying: the server is overloaded, restarting or behind a flaky proxy.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: MLflow says the model, version or run is not there (a normal answer while waiting for one).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
#: ``status_code`` of an error raised before any request: the connection itself is unusable.
CONFIG_ERROR = 0


class MlflowApiError(RuntimeError):
    """An MLflow REST call failed; the message names the connection, server and fix.

    :param status_code: HTTP status; ``None`` when the server was not reached at all;
        :data:`CONFIG_ERROR` when the connection is missing or unusable.
    :param error_code: MLflow's ``error_code`` (e.g. ``RESOURCE_DOES_NOT_EXIST``) if it sent one.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, error_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer at all, or an overloaded/restarting server."""
        return self.status_code is None or self.status_code in TRANSIENT_STATUSES

    @property
    def not_found(self) -> bool:
        return self.status_code == 404 and self.error_code in NOT_FOUND_CODES


@dataclass(frozen=True)
class MlflowEndpoint:
    """Where and how to call the server, resolved once per hook from the connection."""

    base_url: str
    auth: tuple[str, str] | None
    conn_id: str

    def api_url(self, path: str) -> str:
        return f"{self.base_url}/api/2.0/mlflow/{path.lstrip('/')}"


def _normalize_version(raw: dict[str, Any]) -> dict[str, Any]:
    """MLflow omits empty fields and sends tags as a list; callers want a stable shape:
    ``tags`` as a dict, ``aliases`` as a list, ``run_id`` as ``""`` when there is none."""
    version = dict(raw)
    tags = version.get("tags") or []
    version["tags"] = (
        {t["key"]: t.get("value", "") for t in tags} if isinstance(tags, list) else dict(tags)
    )
    version["aliases"] = list(version.get("aliases") or [])
    version.setdefault("run_id", "")
    version.setdefault("status", "READY")
    version["version"] = str(version.get("version", ""))
    return version


class MlflowHook(BaseHook):
    """Connection: type ``mlflow`` (an ``http`` connection works the same); host and port of the
    tracking server, ``schema`` = http|https, optional login/password for a server behind basic
    auth. The connection is read once per hook (:attr:`endpoint`, :meth:`aendpoint`).

    Example: ``AIRFLOW_CONN_MLFLOW_DEFAULT='http://127.0.0.1:5000'``. Without the connection the
    hook falls back to ``MLFLOW_TRACKING_URI`` (as the ``mlflow_tracking_uri`` macro does).

    Sync methods (``get_model_version``...) are for workers and share one HTTP :attr:`session`;
    their ``a``-prefixed twins (``aget_model_version``...) are for triggers and never block the
    event loop.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, timeout: float = 30.0) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.timeout = timeout
        self._async_endpoint: MlflowEndpoint | None = None

    # -- connection ------------------------------------------------------------------------

    def _missing_host(self) -> ValueError:
        return ValueError(
            f"connection {self.mlflow_conn_id!r} has no host; "
            f"set e.g. AIRFLOW_CONN_{self.mlflow_conn_id.upper()}='http://127.0.0.1:5000'"
        )

    def _base_url(self, conn: Connection) -> str:
        host = conn.host or ""
        if "://" in host:  # a connection made from a full URL in the host field
            parts = urlsplit(host)
            scheme, host = parts.scheme, parts.netloc + parts.path
        else:
            scheme = conn.schema or ("https" if conn.port == 443 else "http")
        if not host:
            raise self._missing_host()
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host.rstrip('/')}{port}"

    def tracking_uri(self) -> str:
        """The server's base URL, never with credentials in it (it ends up in task env)."""
        return self._base_url(self.get_connection(self.mlflow_conn_id))

    def _endpoint_from(self, conn: Connection | None) -> MlflowEndpoint:
        if conn is None:
            fallback = os.environ.get("MLFLOW_TRACKING_URI", "").strip().rstrip("/")
            if not fallback.startswith(("http://", "https://")):
                raise MlflowApiError(
                    f"no Airflow connection {self.mlflow_conn_id!r} and no http(s) "
                    f"MLFLOW_TRACKING_URI; define the connection, e.g. "
                    f"AIRFLOW_CONN_{self.mlflow_conn_id.upper()}='http://127.0.0.1:5000'",
                    status_code=CONFIG_ERROR,
                )
            return MlflowEndpoint(fallback, None, self.mlflow_conn_id)
        try:
            base_url = self._base_url(conn)
        except ValueError as err:
            raise MlflowApiError(str(err), status_code=CONFIG_ERROR) from None
        auth = (conn.login, conn.password or "") if conn.login else None
        return MlflowEndpoint(base_url, auth, self.mlflow_conn_id)

    @cached_property
    def endpoint(self) -> MlflowEndpoint:
        """The server, from the connection (else ``MLFLOW_TRACKING_URI``); for workers."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn: Connection | None = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            conn = None
        return self._endpoint_from(conn)

    async def aendpoint(self) -> MlflowEndpoint:
        """:attr:`endpoint` for triggers: read with ``aget_connection`` on first use, then kept."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        if self._async_endpoint is None:
            try:
                conn: Connection | None = await self.aget_connection(self.mlflow_conn_id)
            except AirflowNotFoundException:
                conn = None
            self._async_endpoint = self._endpoint_from(conn)
        return self._async_endpoint

    @cached_property
    def session(self) -> requests.Session:
        """One HTTP session per hook: credentials set once, connections reused between calls.
        The async twin opens an ``httpx`` client per call instead: a trigger's event loop (or
        each ``asyncio.run``) owns its sockets."""
        import requests

        session = requests.Session()
        session.auth = self.endpoint.auth
        return session

    # -- transport -------------------------------------------------------------------------

    @staticmethod
    def _error(
        endpoint: MlflowEndpoint, call: str, *, status: int | None, body: Any = None, text: str = ""
    ) -> MlflowApiError:
        where = f"MLflow at {endpoint.base_url} (connection {endpoint.conn_id!r})"
        if status is None:
            return MlflowApiError(
                f"{call}: {where} did not answer: {text}; check the server is up and "
                f"the connection's host/port",
            )
        error_code = body.get("error_code") if isinstance(body, dict) else None
        detail = body.get("message") if isinstance(body, dict) else None
        detail = detail or text[:300].strip() or "(empty body)"
        hint = ""
        if status in (401, 403):
            hint = "; set the connection's login/password to an MLflow user allowed to do this"
        elif status == 404 and error_code is None:
            hint = "; the URL is not an MLflow REST API: check the connection's host, port, path"
        return MlflowApiError(
            f"{call} -> HTTP {status} from {where}: {detail}{hint}",
            status_code=status,
            error_code=error_code,
        )

    @staticmethod
    def _describe(method: str, path: str, params: dict[str, Any] | None) -> str:
        """``GET model-versions/get (name='churn', version='3')``: names the model in errors."""
        args = ", ".join(f"{k}={v!r}" for k, v in (params or {}).items())
        return f"{method} {path} ({args})" if args else f"{method} {path}"

    @staticmethod
    def _split(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        """GET sends query parameters; everything else a JSON body (MLflow insists on it)."""
        if not params:
            return {}
        return {"params": params} if method == "GET" else {"json": params}

    def _call(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._send(
            method, path, self._describe(method, path, params), self._split(method, params)
        )

    def _send(self, method: str, path: str, call: str, options: dict[str, Any]) -> Any:
        import requests

        endpoint = self.endpoint
        try:
            response = self.session.request(
                method, endpoint.api_url(path), timeout=self.timeout, **options
            )
        except requests.RequestException as err:
            raise self._error(endpoint, call, status=None, text=str(err)) from None
        return self._decode(endpoint, call, response.status_code, response.text)

    async def _acall(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        endpoint = await self.aendpoint()
        call = self._describe(method, path, params)
        try:
            async with httpx.AsyncClient(auth=endpoint.auth, timeout=self.timeout) as client:
                response = await client.request(
                    method, endpoint.api_url(path), **self._split(method, params)
                )
        except httpx.HTTPError as err:
            raise self._error(endpoint, call, status=None, text=repr(err)) from None
        return self._decode(endpoint, call, response.status_code, response.text)

    def _decode(self, endpoint: MlflowEndpoint, call: str, status: int, text: str) -> Any:
        import json

        try:
            body: Any = json.loads(text) if text else {}
        except ValueError:
            body = None
        if status >= 400 or not isinstance(body, dict):
            raise self._error(endpoint, call, status=status, body=body, text=text)
        return body

    def request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        """Call ``/api/2.0/mlflow/<endpoint>`` and return the decoded JSON body.

        Raw escape hatch (``kwargs`` go to ``requests``); raises :class:`MlflowApiError`.
        """
        return self._send(method, endpoint, f"{method} {endpoint}", kwargs)

    # -- registry: sync (workers) ----------------------------------------------------------

    def get_model_version(self, name: str, version: str | int) -> dict[str, Any]:
        """One model version (``tags`` as a dict); raises :class:`MlflowApiError` if absent."""
        body = self._call("GET", "model-versions/get", {"name": name, "version": str(version)})
        return _normalize_version(body["model_version"])

    def get_version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        """The version ``name@alias`` points to, or ``None`` if the model or alias is absent."""
        try:
            body = self._call("GET", "registered-models/alias", {"name": name, "alias": alias})
        except MlflowApiError as err:
            if not self._maybe_missing_alias(err):
                raise
            # MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE, like a malformed
            # one: read the model's alias list to tell "absent" from a real error.
            try:
                model = self._call("GET", "registered-models/get", {"name": name})
            except MlflowApiError as again:
                if again.not_found:
                    return None
                raise
            target = self._alias_target(err, model, alias)
            return None if target is None else self.get_model_version(name, target)
        return _normalize_version(body["model_version"])

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point ``name@alias`` at ``version`` (moves it if it pointed elsewhere)."""
        body = {"name": name, "alias": alias, "version": str(version)}
        self._call("POST", "registered-models/alias", body)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias``; MLflow treats an absent alias as already deleted."""
        self._call("DELETE", "registered-models/alias", {"name": name, "alias": alias})

    def set_version_tag(self, name: str, version: str | int, key: str, value: str) -> None:
        self._call(
            "POST",
            "model-versions/set-tag",
            {"name": name, "version": str(version), "key": key, "value": str(value)},
        )

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run as MLflow returns it: ``{"info": {...}, "data": {"metrics": [...], ...}}``."""
        return dict(self._call("GET", "runs/get", {"run_id": run_id})["run"])

    # -- registry: async (triggers) --------------------------------------------------------

    async def aget_model_version(self, name: str, version: str | int) -> dict[str, Any]:
        body = await self._acall(
            "GET", "model-versions/get", {"name": name, "version": str(version)}
        )
        return _normalize_version(body["model_version"])

    async def aget_version_by_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        try:
            body = await self._acall(
                "GET", "registered-models/alias", {"name": name, "alias": alias}
            )
        except MlflowApiError as err:
            if not self._maybe_missing_alias(err):
                raise
            try:
                model = await self._acall("GET", "registered-models/get", {"name": name})
            except MlflowApiError as again:
                if again.not_found:
                    return None
                raise
            target = self._alias_target(err, model, alias)
            return None if target is None else await self.aget_model_version(name, target)
        return _normalize_version(body["model_version"])

    async def asearch_model_aliases(self, page_size: int = 1000) -> dict[str, dict[str, str]]:
        """Every registered model's aliases, ``{model: {alias: version}}``, in one paginated
        search (one request per ``page_size`` models): what a shared registry watch polls."""
        found: dict[str, dict[str, str]] = {}
        params: dict[str, Any] = {"max_results": page_size}
        while True:
            body = await self._acall("GET", "registered-models/search", params)
            for model in body.get("registered_models") or []:
                found[str(model["name"])] = {
                    str(entry["alias"]): str(entry["version"])
                    for entry in model.get("aliases") or []
                }
            token = body.get("next_page_token")
            if not token:
                return found
            params = {"max_results": page_size, "page_token": token}

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _maybe_missing_alias(err: MlflowApiError) -> bool:
        """404 (no such model) or MLflow's 400 for an alias the model does not have."""
        return err.not_found or (
            err.status_code == 400 and err.error_code == "INVALID_PARAMETER_VALUE"
        )

    @staticmethod
    def _alias_target(err: MlflowApiError, model_body: dict[str, Any], alias: str) -> str | None:
        """The version the model's alias list names; ``None`` if absent; re-raises ``err`` when
        the model exists, lacks the alias and MLflow's complaint was not "not found" (a
        malformed alias name is the caller's bug, not "no such alias yet")."""
        for entry in model_body.get("registered_model", {}).get("aliases") or []:
            if entry.get("alias") == alias:
                return str(entry.get("version"))  # set between our two calls
        if err.not_found or "not found" in str(err).lower():
            return None
        raise err


def mlflow_tracking_uri(conn_id: str = MlflowHook.default_conn_name) -> str:
    """Template macro: the tracking URI from the connection, else from MLFLOW_TRACKING_URI."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return MlflowHook(conn_id).tracking_uri()
    except AirflowNotFoundException:
        fallback = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if fallback:
            return fallback
        raise AirflowNotFoundException(
            f"no Airflow connection {conn_id!r} and no MLFLOW_TRACKING_URI; define the connection, "
            f"e.g. AIRFLOW_CONN_{conn_id.upper()}='http://127.0.0.1:5000'"
        ) from None
