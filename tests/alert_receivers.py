"""Loopback stand-ins for what receives alerts: an HTTP endpoint (Slack's incoming webhook and
the generic webhook look alike on the wire) and an SMTP server. Both record exactly what
arrived, so tests check the real requests our channels send."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Answers every request with ``status``/``reply``; records each one."""

    url: str = ""
    status: int = 200
    reply: bytes = b"ok"
    requests: list[HttpRequest] = field(default_factory=list)


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receiver.requests.append(
                HttpRequest(self.command, self.path, dict(self.headers.items()), body)
            )
            self.send_response(receiver.status)
            self.send_header("Content-Length", str(len(receiver.reply)))
            self.end_headers()
            self.wfile.write(receiver.reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    auth: tuple[str, str] | None

    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class SmtpReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    credentials: tuple[str, str] | None = None  # when set, AUTH PLAIN must match
    mails: list[Mail] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@contextmanager
def smtp_receiver(credentials: tuple[str, str] | None = None) -> Iterator[SmtpReceiver]:
    """A minimal SMTP server (RFC 5321 subset: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT);
    smtplib talks to it exactly as to a real relay without TLS."""
    receiver = SmtpReceiver(credentials=credentials)

    class Handler(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")

        def handle(self) -> None:
            self.reply("220 loopback ESMTP")
            mail_from, rcpt, auth = "", [], None
            while line := self.rfile.readline():
                command = line.decode().rstrip("\r\n")
                verb = command.split(" ", 1)[0].upper()
                receiver.commands.append(verb)
                if verb == "EHLO":
                    self.reply("250-loopback")
                    self.reply("250 AUTH PLAIN")
                elif verb == "HELO" or verb in ("NOOP", "RSET"):
                    self.reply("250 ok")
                elif verb == "AUTH":
                    parts = command.split(" ")
                    raw = parts[2] if len(parts) > 2 else ""
                    if not raw:
                        self.reply("334 ")
                        raw = self.rfile.readline().decode().strip()
                    _, user, password = base64.b64decode(raw).decode().split("\0")
                    if receiver.credentials not in (None, (user, password)):
                        self.reply("535 5.7.8 authentication failed")
                        continue
                    auth = (user, password)
                    self.reply("235 2.7.0 authenticated")
                elif verb == "MAIL":
                    mail_from = command.split(":", 1)[1].strip().strip("<>").split(">")[0]
                    self.reply("250 ok")
                elif verb == "RCPT":
                    rcpt.append(command.split(":", 1)[1].strip().strip("<>"))
                    self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 end with .")
                    data = b""
                    while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    receiver.mails.append(Mail(mail_from, rcpt, data, auth))
                    rcpt = []
                    self.reply("250 queued")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
