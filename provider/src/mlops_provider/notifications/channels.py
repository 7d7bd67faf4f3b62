"""Alert channels: where an alert can go, each through its provider's notifier.

``MLOPS_ALERT_CHANNELS`` picks them (default ``file``):

- ``file``: one JSON line per alert in ``$MLOPS_HOME/alerts/alerts.jsonl``, and the same line in
  the log of whatever process raised the alert (task, triggerer, DAG processor).
- ``slack``: the Slack provider's ``SlackWebhookNotifier``. Connection ``slack_alerts`` (type
  ``slackwebhook``): the incoming-webhook URL in the *password* field (it is the secret), or the
  provider's split form: host ``https://hooks.slack.com/services``, the token as the password.
- ``email``: the SMTP provider's ``SmtpNotifier``. Connection ``smtp_alerts`` (type ``smtp``) as
  that provider reads it: host, port, login/password; extra ``from_email`` (default: the login),
  ``disable_ssl: true`` for a STARTTLS relay (587), ``disable_tls: true`` for implicit TLS (465),
  both only for a trusted local relay; plus extra ``to``, the comma-separated recipients.
- ``webhook``: the HTTP provider's ``HttpNotifier`` POSTs the alert record as JSON. Connection
  ``alerts_webhook`` (type ``http``): the full URL in *host*; a password is sent as a bearer token.

Each channel reads its connection before handing over to the provider, so a missing or
incomplete one fails with the field and the fix. Secrets come only from connections and never
appear in an error or a log line: errors name the receiver by host:port only, library errors of
unknown shape are reported by type, and the loggers that print request URLs are held at INFO.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import html
import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import urlsplit

from mlops_provider.notifications.alerts import Alert

if TYPE_CHECKING:
    from airflow.sdk import Connection, Context
    from airflow.sdk.types import Logger

    from mlops_steps.core.settings import Settings

log = logging.getLogger(__name__)

#: Loggers that print a request's URL at DEBUG (slack_sdk also logs retries with it); a Slack
#: webhook URL is the secret itself.
URL_LOGGERS = ("slack_sdk", "aiohttp")
_SLACK_ICONS = {"task_failed": ":red_circle:", "deadline_missed": ":hourglass:"}
#: How the Slack hook words a non-200 answer: "Response body: 'no_service', Status Code: 404. ..."
_SLACK_ANSWER = re.compile(r"Response body: (?P<body>.*), Status Code: (?P<status>\d{3})", re.S)
#: How the HTTP hook words an error status: "503:Service Unavailable".
_HTTP_ANSWER = re.compile(r"(?P<status>\d{3}):(?P<reason>.*)", re.S)
_REVOKED = ("403", "404", "410")


class ChannelError(RuntimeError):
    """A channel could not deliver an alert; the message names the connection/field and the fix
    and never contains a secret."""


class Channel(Protocol):
    name: str

    async def send(self, alert: Alert) -> None: ...


def _no_context() -> Context:
    """The alert is rendered already: the providers' notifiers get no context to template."""
    return cast("Context", {})


def _where(url: str) -> str:
    """host:port of a URL, without credentials or path (a webhook path is often the secret)."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def _unreachable(what: str, where: str, err: BaseException) -> ChannelError:
    """A network failure, by type only: aiohttp's messages can carry the URL."""
    return ChannelError(f"{what}: could not reach {where} ({type(err).__name__})")


async def _connection(conn_id: str, channel: str, example: str) -> Connection:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        raise ChannelError(
            f"{channel}: Airflow connection {conn_id!r} is not defined; create it (e.g. "
            f"AIRFLOW_CONN_{conn_id.upper()}='{example}') or remove {channel!r} from "
            f"MLOPS_ALERT_CHANNELS"
        ) from None


async def _in_daemon_thread(call: Callable[[], None]) -> None:
    """Await a blocking call made in a daemon thread. Unlike ``asyncio.to_thread`` an exchange
    abandoned at the channel timeout holds neither ``asyncio.run``'s shutdown (it joins the
    default executor) nor the task process's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():  # the caller gave up at the timeout
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            call()
        except BaseException as raised:  # handed to the awaiting coroutine
            error = raised
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="mlops-alert", daemon=True).start()
    await done


class FileChannel:
    """JSON lines on local disk plus the log: works with nothing configured."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, alert: Alert) -> None:
        line = json.dumps(alert.record(), default=str)
        await asyncio.to_thread(self._append, line)
        log.warning("ALERT %s", line)

    def _append(self, line: str) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line under an exclusive lock: tasks, the triggerer and the DAG
        # processor may append at the same moment.
        with self.path.open("a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line + "\n")


class SlackChannel:
    """A Slack incoming webhook through the Slack provider's notifier."""

    name = "slack"
    _EXAMPLE = '{"conn_type": "slackwebhook", "password": "https://hooks.slack.com/services/T/B/X"}'

    def __init__(self, conn_id: str) -> None:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        self.conn_id = conn_id
        self.notifier_class = SlackWebhookNotifier  # imported before the channel's timer starts

    def where(self, conn: Connection) -> str:
        """The receiver's host:port, resolved the way the Slack hook builds the URL."""
        secret, host = (conn.password or "").strip(), (conn.host or "").strip()
        if not secret:
            raise ChannelError(
                f"slack: connection {self.conn_id!r} has no webhook URL; put the incoming-webhook "
                f"URL (https://hooks.slack.com/services/...) in its password field"
            )
        if "://" in secret:
            return _where(secret)
        return _where(host if "://" in host else f"https://{host or 'hooks.slack.com'}")

    @staticmethod
    def _escape(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def text(self, alert: Alert) -> str:
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
        return "\n".join(lines)

    async def send(self, alert: Alert) -> None:
        from airflow.sdk.exceptions import AirflowException

        where = self.where(await _connection(self.conn_id, self.name, self._EXAMPLE))
        notifier = self.notifier_class(slack_webhook_conn_id=self.conn_id, text=self.text(alert))
        # The notifier and its hook's slack_sdk client log the webhook URL at DEBUG, through
        # loggers that follow Airflow's log level: both get slack_sdk's own, held at INFO.
        url_logger = logging.getLogger("slack_sdk")
        notifier._log = cast("Logger", url_logger)  # LoggingMixin's per-instance logger
        notifier.hook.extra_client_args["logger"] = url_logger
        what = f"slack (connection {self.conn_id!r})"
        try:
            await notifier.async_notify(_no_context())
        except AirflowException as err:
            answer = _SLACK_ANSWER.search(str(err))
            if answer is None:
                raise ChannelError(f"{what}: {type(err).__name__} from {where}") from None
            status, body = answer["status"], answer["body"]
            with contextlib.suppress(ValueError, SyntaxError):  # the hook shows the body's repr
                body = str(ast.literal_eval(body))
            hint = ""
            if status in _REVOKED:
                hint = (
                    "; the webhook URL in the connection's password is wrong or revoked: create "
                    "a new incoming webhook in Slack and store its URL there"
                )
            raise ChannelError(
                f"{what}: HTTP {status} from {where}: {body[:200].strip() or '(empty body)'}{hint}"
            ) from None
        except OSError as err:  # aiohttp's connection errors are OSErrors too
            raise _unreachable(what, where, err) from None


class EmailChannel:
    """SMTP through the SMTP provider's notifier, with TLS unless the connection turns it off."""

    name = "email"
    _EXAMPLE = (
        '{"conn_type": "smtp", "host": "smtp.example.com", "port": 587, "login": "alerts", '
        '"password": "...", "extra": {"disable_ssl": true, "to": "oncall@example.com"}}'
    )

    def __init__(self, conn_id: str) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        self.conn_id = conn_id
        self.notifier_class = SmtpNotifier  # imported before the channel's timer starts

    def _fail(self, problem: str) -> ChannelError:
        return ChannelError(f"email: connection {self.conn_id!r} {problem}")

    async def send(self, alert: Alert) -> None:
        import smtplib

        from airflow.sdk.exceptions import AirflowException

        conn = await _connection(self.conn_id, self.name, self._EXAMPLE)
        extra = await conn.aextra_dejson()
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
        where = f"{conn.host}:{conn.port}" if conn.port else conn.host
        notifier = self.notifier_class(
            to=recipients,
            from_email=sender,
            subject=f"[airflow-mlops] {alert.title}",
            html_content=f"<pre>{html.escape(alert.text())}</pre>",
            custom_headers={"X-Mlops-Alert-Id": alert.alert_id, "X-Mlops-Alert-Kind": alert.kind},
            smtp_conn_id=self.conn_id,
        )
        try:
            # The provider's sync path: its async one asks for STARTTLS a second time after
            # aiosmtplib upgraded on connect, and fails on every STARTTLS relay (SMTP provider
            # 3.2.0). In a thread it never blocks the triggerer's event loop.
            await _in_daemon_thread(functools.partial(notifier.notify, _no_context()))
        except smtplib.SMTPAuthenticationError as err:
            raise self._fail(
                f"was refused by {where} (SMTP {err.smtp_code}): check its login and password"
            ) from None
        except smtplib.SMTPNotSupportedError as err:
            if "STARTTLS" not in str(err):
                raise ChannelError(f"email via {where}: {err}") from None
            raise self._fail(
                f"asks for STARTTLS but {where} does not offer it; set its extra "
                f'"disable_tls": true only for a trusted local relay'
            ) from None
        except (smtplib.SMTPException, OSError, AirflowException) as err:  # the hook's own words
            raise ChannelError(
                f"email via {where} (connection {self.conn_id!r}) failed: "
                f"{type(err).__name__}: {err}"
            ) from None


class WebhookChannel:
    """The alert record as JSON to any HTTP endpoint (an incident tool, a chat bridge)."""

    name = "webhook"
    _EXAMPLE = '{"conn_type": "http", "host": "https://alerts.example.com/hook"}'

    def __init__(self, conn_id: str) -> None:
        from airflow.providers.http.notifications.http import HttpNotifier

        self.conn_id = conn_id
        self.notifier_class = HttpNotifier  # imported before the channel's timer starts

    def where(self, conn: Connection) -> str:
        """The receiver's host:port; refuses a host without a scheme, which the HTTP hook would
        send over plain http (and with it the bearer token)."""
        host = (conn.host or "").strip()
        if "://" in host:
            return _where(host)
        if host and conn.schema in ("http", "https"):
            return f"{host}:{conn.port}" if conn.port else host
        raise ChannelError(
            f"webhook: connection {self.conn_id!r} has no URL; put the full URL "
            f"(https://alerts.example.com/hook) in its host field"
        )

    async def send(self, alert: Alert) -> None:
        from airflow.providers.http.exceptions import HttpErrorException

        conn = await _connection(self.conn_id, self.name, self._EXAMPLE)
        where = self.where(conn)
        headers = {"X-Mlops-Alert-Id": alert.alert_id}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        notifier = self.notifier_class(
            http_conn_id=self.conn_id, json=alert.record(), headers=headers
        )
        what = f"webhook (connection {self.conn_id!r})"
        try:
            await notifier.async_notify(_no_context())
        except HttpErrorException as err:
            answer = _HTTP_ANSWER.fullmatch(str(err))
            detail = f"HTTP {answer['status']}: {answer['reason']}" if answer else "HTTP error"
            raise ChannelError(f"{what}: {detail} from {where}") from None
        except OSError as err:
            raise _unreachable(what, where, err) from None


def build_channel(name: str, settings: Settings) -> Channel:
    alerts = settings.alerts
    if name == "file":
        return FileChannel(settings.alerts_path)
    if name == "slack":
        return SlackChannel(alerts.slack_conn_id)
    if name == "email":
        return EmailChannel(alerts.smtp_conn_id)
    if name == "webhook":
        return WebhookChannel(alerts.webhook_conn_id)
    raise ChannelError(f"unknown alert channel {name!r}; use file, slack, email or webhook")


def hold_url_loggers_at_info() -> None:
    """Raise :data:`URL_LOGGERS` to INFO (never lower a level someone set higher)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherit) included
            logger.setLevel(logging.INFO)
