"""Alert channels and the one function that delivers an alert to every configured channel.

``MLOPS_ALERT_CHANNELS`` picks them (default ``file``):

- ``file``: one JSON line per alert in ``$MLOPS_HOME/alerts/alerts.jsonl``, and the same line in
  the log of whatever process raised the alert (task, triggerer, DAG processor).
- ``slack``: a Slack incoming webhook. Connection ``slack_alerts``: the webhook URL in the
  *password* field (it is the secret), e.g. ``AIRFLOW_CONN_SLACK_ALERTS='{"conn_type":
  "generic", "password": "https://hooks.slack.com/services/T000/B000/XXXX"}'``.
- ``email``: SMTP. Connection ``smtp_alerts``: host, port, login/password; extra ``to``
  (comma-separated), ``from_email`` (default: the login), ``ssl`` (implicit TLS; default when
  port 465) or ``starttls`` (default true; false only for a trusted local relay).
- ``webhook``: the alert record as a JSON POST. Connection ``alerts_webhook``: the URL in
  *host* (``https://alerts.example.com/hook``); a password is sent as a bearer token.

Slack and the webhook go through ``urllib.request``, email through ``smtplib`` (standard library,
imported when used; unlike ``requests`` they log no URL): no provider package is needed (the
Slack provider is not part of this image). Secrets
come only from connections and never appear in an error or a log line: errors name the
connection, the field and the fix, and the receiver by host:port only.
"""

from __future__ import annotations

import json
import logging
import traceback
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from mlops_provider.notifications.alerts import Alert

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from mlops_steps.core.settings import Settings

log = logging.getLogger(__name__)

SENT = "sent"
_SLACK_ICONS = {"task_failed": ":red_circle:", "deadline_missed": ":hourglass:"}


class ChannelError(RuntimeError):
    """A channel could not deliver an alert; the message names the connection/field and the fix
    and never contains a secret."""


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _where(url: str) -> str:
    """host:port of a URL, without credentials or path (a webhook path is often the secret)."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def _connection(conn_id: str, channel: str, example: str) -> Connection:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ChannelError(
            f"{channel}: Airflow connection {conn_id!r} is not defined; create it (e.g. "
            f"AIRFLOW_CONN_{conn_id.upper()}='{example}') or remove {channel!r} from "
            f"MLOPS_ALERT_CHANNELS"
        ) from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would send the alert (and token) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post_json(
    url: str, payload: Any, *, what: str, timeout: float, headers: dict[str, str] | None = None
) -> None:
    """POST JSON with the standard library: unlike requests/urllib3 it logs nothing, and a
    webhook URL's path is often the secret itself (urllib3 logs it at DEBUG)."""
    import urllib.error

    where = _where(url)
    request = urllib.request.Request(  # noqa: S310 - the URL comes from an admin-set connection
        url,
        data=json.dumps(payload, default=str).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as err:
        body = err.read()[:200].decode(errors="replace").strip() or "(empty body)"
        raise ChannelError(f"{what}: HTTP {err.code} from {where}: {body}") from None
    except TimeoutError:
        raise ChannelError(f"{what}: {where} did not answer within {timeout:g} s") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        kind = type(reason).__name__ if isinstance(reason, BaseException) else type(err).__name__
        raise ChannelError(f"{what}: could not reach {where} ({kind})") from None


class FileChannel:
    """JSON lines on local disk plus the log: works with nothing configured."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, alert: Alert) -> None:
        import fcntl

        line = json.dumps(alert.record(), default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line under an exclusive lock: tasks, the triggerer and the DAG
        # processor may append at the same moment.
        with self.path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line + "\n")
        log.warning("ALERT %s", line)


class SlackChannel:
    """A Slack incoming webhook; the URL is the secret, so it lives in the password field."""

    name = "slack"
    _EXAMPLE = '{"conn_type": "generic", "password": "https://hooks.slack.com/services/T/B/X"}'

    def __init__(self, conn_id: str, timeout: float) -> None:
        self.conn_id = conn_id
        self.timeout = timeout

    def webhook_url(self) -> str:
        conn = _connection(self.conn_id, self.name, self._EXAMPLE)
        secret, host = (conn.password or "").strip(), (conn.host or "").strip()
        if secret.startswith(("https://", "http://")):
            return secret
        if secret and host:  # the Slack provider's form: host https://hooks.slack.com/services
            base = host if "://" in host else f"https://{host}"
            return f"{base.rstrip('/')}/{secret.lstrip('/')}"
        if host.startswith(("https://", "http://")) and urlsplit(host).path.strip("/"):
            return host
        raise ChannelError(
            f"slack: connection {self.conn_id!r} has no webhook URL; put the incoming-webhook "
            f"URL (https://hooks.slack.com/services/...) in its password field"
        )

    @staticmethod
    def _escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def payload(self, alert: Alert) -> dict[str, Any]:
        icon = _SLACK_ICONS.get(alert.kind, ":bell:")
        where = f"DAG `{alert.dag_id}` · run `{alert.run_id}`"
        if alert.task_id:
            where += f" · task `{alert.task_id}` (try {alert.try_number})"
        lines = [f"{icon} *{self._escape(alert.title)}*", self._escape(alert.message), where]
        if alert.log_url:
            lines.append(f"<{alert.log_url}|Open in Airflow>")
        link = alert.details.get("required_actions_url")
        if link:
            lines.append(f"<{link}|Answer in Airflow>")
        return {"text": "\n".join(lines)}

    def send(self, alert: Alert) -> None:
        url = self.webhook_url()
        what = f"slack (connection {self.conn_id!r})"
        try:
            _post_json(url, self.payload(alert), what=what, timeout=self.timeout)
        except ChannelError as err:
            if any(f"HTTP {code}" in str(err) for code in (403, 404, 410)):
                raise ChannelError(
                    f"{err}; the webhook URL in the connection's password is wrong or revoked: "
                    f"create a new incoming webhook in Slack and store its URL there"
                ) from None
            raise


class EmailChannel:
    """SMTP with TLS by default (implicit on port 465, else STARTTLS)."""

    name = "email"
    _EXAMPLE = (
        '{"conn_type": "smtp", "host": "smtp.example.com", "port": 587, "login": "alerts", '
        '"password": "...", "extra": {"to": "oncall@example.com"}}'
    )

    def __init__(self, conn_id: str, timeout: float) -> None:
        self.conn_id = conn_id
        self.timeout = timeout

    def _fail(self, problem: str) -> ChannelError:
        return ChannelError(f"email: connection {self.conn_id!r} {problem}")

    def message(self, alert: Alert, sender: str, recipients: Sequence[str]) -> Any:
        from email.message import EmailMessage
        from email.utils import make_msgid

        msg = EmailMessage()
        msg["Subject"] = f"[airflow-mlops] {alert.title}"
        msg["From"] = sender
        msg["To"] = ", ".join(recipients)
        msg["Message-ID"] = make_msgid(idstring=alert.alert_id, domain="airflow-mlops")  # no DNS
        msg["X-Mlops-Alert-Id"] = alert.alert_id
        msg["X-Mlops-Alert-Kind"] = alert.kind
        msg.set_content(alert.text())
        return msg

    def send(self, alert: Alert) -> None:
        import smtplib
        import ssl

        conn = _connection(self.conn_id, self.name, self._EXAMPLE)
        extra = conn.extra_dejson
        raw_to = extra.get("to") or ""
        to_list = raw_to if isinstance(raw_to, list) else str(raw_to).split(",")
        recipients = [address.strip() for address in to_list if address.strip()]
        if not recipients:
            raise self._fail('has no recipients: set its extra "to" (comma-separated addresses)')
        sender = str(extra.get("from_email") or conn.login or "").strip()
        if not sender:
            raise self._fail('has no sender: set its extra "from_email" or its login')
        if not conn.host:
            raise self._fail("has no host: set the SMTP server's host (and port)")
        implicit_tls = _truthy(extra.get("ssl"), default=conn.port == 465)
        port = conn.port or (465 if implicit_tls else 587)
        starttls = not implicit_tls and _truthy(extra.get("starttls"), default=True)
        where = f"{conn.host}:{port}"
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        try:
            if implicit_tls:
                smtp = smtplib.SMTP_SSL(conn.host, port, timeout=self.timeout, context=context)
            else:
                smtp = smtplib.SMTP(conn.host, port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if starttls:
                    if not smtp.has_extn("starttls"):
                        raise self._fail(
                            f"asks for STARTTLS but {where} does not offer it; set extra "
                            f'"starttls": false only for a trusted local relay'
                        )
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if conn.login:
                    smtp.login(conn.login, conn.password or "")
                smtp.send_message(self.message(alert, sender, recipients))
        except smtplib.SMTPAuthenticationError as err:
            raise self._fail(
                f"was refused by {where} (SMTP {err.smtp_code}): check its login and password"
            ) from None
        except (smtplib.SMTPException, OSError) as err:
            if isinstance(err, ChannelError):
                raise
            raise ChannelError(
                f"email via {where} (connection {self.conn_id!r}) failed: "
                f"{type(err).__name__}: {err}"
            ) from None


class WebhookChannel:
    """The alert record as JSON to any HTTP endpoint (an incident tool, a chat bridge)."""

    name = "webhook"
    _EXAMPLE = '{"conn_type": "http", "host": "https://alerts.example.com/hook"}'

    def __init__(self, conn_id: str, timeout: float) -> None:
        self.conn_id = conn_id
        self.timeout = timeout

    def endpoint(self) -> tuple[str, dict[str, str]]:
        conn = _connection(self.conn_id, self.name, self._EXAMPLE)
        host = (conn.host or "").strip()
        if not host:
            raise ChannelError(
                f"webhook: connection {self.conn_id!r} has no host; put the full URL "
                f"(https://alerts.example.com/hook) in its host field"
            )
        if "://" in host:
            url = host
        else:
            scheme = conn.schema if conn.schema in ("http", "https") else "https"
            port = f":{conn.port}" if conn.port else ""
            path = str(conn.extra_dejson.get("endpoint") or "").lstrip("/")
            url = f"{scheme}://{host}{port}/{path}"
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
        return url, headers

    def send(self, alert: Alert) -> None:
        url, headers = self.endpoint()
        headers["X-Mlops-Alert-Id"] = alert.alert_id
        what = f"webhook (connection {self.conn_id!r})"
        _post_json(url, alert.record(), what=what, timeout=self.timeout, headers=headers)


def build_channel(name: str, settings: Settings) -> Channel:
    alerts = settings.alerts
    if name == "file":
        return FileChannel(settings.alerts_path)
    if name == "slack":
        return SlackChannel(alerts.slack_conn_id, alerts.timeout_s)
    if name == "email":
        return EmailChannel(alerts.smtp_conn_id, alerts.timeout_s)
    if name == "webhook":
        return WebhookChannel(alerts.webhook_conn_id, alerts.timeout_s)
    raise ChannelError(f"unknown alert channel {name!r}; use file, slack, email or webhook")


def deliver(alert: Alert, channels: Sequence[str] | None = None) -> dict[str, str]:
    """Send ``alert`` once on each channel; a failing channel is logged and the others still
    run. Never raises: an alert must not fail the task (or approval) that raised it.

    :return: channel -> ``"sent"`` or ``"failed: <reason>"``.
    """
    from mlops_steps.core.settings import ConfigError, get_settings

    results: dict[str, str] = {}
    try:
        settings = get_settings()
        names = list(channels) if channels is not None else list(settings.alerts.channels)
    except ConfigError as err:
        log.error("alert %s (%s) not sent: %s", alert.alert_id, alert.title, err)
        return {"config": f"failed: {err}"}
    for name in names:
        try:
            build_channel(name, settings).send(alert)
        except ChannelError as err:
            results[name] = f"failed: {err}"
        except Exception as err:  # a bug or an odd library error: keep the other channels going
            # Library errors can embed a URL or a password: the type and the frames, no message.
            frames = "".join(traceback.format_tb(err.__traceback__))
            results[name] = f"failed: unexpected {type(err).__name__} at\n{frames}"
        else:
            results[name] = SENT
            continue
        log.error("alert %s: channel %r failed: %s", alert.alert_id, name, results[name])
    log.info("alert %s (%s): %s", alert.alert_id, alert.title, results)
    return results
