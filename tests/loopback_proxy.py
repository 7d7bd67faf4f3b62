"""A reverse proxy on loopback in front of one HTTP server, able to withhold answers on purpose.

The release steps reach the model service through it (``MLOPS_SERVICE_URL``), so a test can make
the service stop answering predictions while its admin API, ``/ready`` and ``/metrics`` keep
working: exactly what a canary analysis sees when the canary replay gets no answers.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

#: Hop-by-hop headers a proxy must not pass on (RFC 9110 7.6.1).
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"}
_UPSTREAM_TIMEOUT_S = 180.0  # loading a canary model can take a while on a busy machine


@dataclass
class Proxy:
    """``url`` forwards to ``upstream`` (which a test may set later); while ``withhold`` names a
    path prefix, requests to it are read and their connection closed without an answer (counted
    in ``withheld``)."""

    upstream: str
    url: str = ""
    withhold: str | None = None
    withheld: int = 0
    forwarded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, attribute: str) -> None:
        with self._lock:
            setattr(self, attribute, getattr(self, attribute) + 1)


@contextmanager
def reverse_proxy(upstream: str) -> Iterator[Proxy]:
    proxy = Proxy(upstream.rstrip("/"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if proxy.withhold is not None and self.path.startswith(proxy.withhold):
                proxy.count("withheld")
                self.close_connection = True  # no status line, no body: the client gets nothing
                return
            target = urlsplit(proxy.upstream)  # read per request: a test may set it later
            connection = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=_UPSTREAM_TIMEOUT_S
            )
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            proxy.count("forwarded")
            self.send_response(response.status, response.reason)
            head = self.command == "HEAD"  # no body: the upstream's Content-Length stands
            dropped = _HOP_BY_HOP if head else _HOP_BY_HOP | {"content-length"}
            for key, value in response.getheaders():
                if key.lower() not in dropped:
                    self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not head:
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
