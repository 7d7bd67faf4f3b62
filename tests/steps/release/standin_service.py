"""A loopback stand-in of the model service for the canary analysis: ``/ready`` (the traffic
state the service target reads), ``/predict`` (routes by the customer id like the service and
answers with a per-variant scoring function) and ``/metrics`` (the service's own
:class:`ServingMetrics` families). Faults on request: drop every n-th prediction connection
unanswered, or write metrics without the ``version`` label as a service older than it did."""

from __future__ import annotations

import json
import re
import socket
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import generate_latest

from mlops_serving.metrics import ServingMetrics

Scorer = Callable[[str], float]  # customer id -> score


@dataclass
class StandIn:
    stable: tuple[str, Scorer] | None  # version, scorer
    canary: tuple[str, Scorer]
    weight: float
    drop_every: int = 0  # 0: answer every request
    version_label: bool = True
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    lock: threading.Lock = field(default_factory=threading.Lock)
    predictions: int = 0
    url: str = ""

    def route(self, entity: str) -> tuple[str, tuple[str, Scorer]]:
        if self.stable is None or zlib.crc32(entity.encode()) % 1000 < self.weight * 1000:
            return "canary", self.canary
        return "stable", self.stable


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/ready":
                state = {
                    "stable": standin.stable[0] if standin.stable else None,
                    "canary": standin.canary[0],
                    "canary_weight": standin.weight,
                }
                self._answer(200, json.dumps(state).encode())
            elif self.path == "/metrics":
                with standin.lock:
                    text = generate_latest(standin.metrics.registry).decode()
                if not standin.version_label:
                    text = re.sub(r',?version="[^"]*"', "", text).replace("{,", "{")
                self._answer(200, text.encode(), "text/plain; version=0.0.4")
            else:
                self._answer(404, b"{}")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with standin.lock:
                standin.predictions += 1
                drop = standin.drop_every and standin.predictions % standin.drop_every == 0
            if drop:  # the connection closes without an answer (as a timeout would end)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            variant, (version, scorer) = standin.route(body["entity_id"])
            score = scorer(body["entity_id"])
            with standin.lock:
                standin.metrics.scored(variant, version, score)
                standin.metrics.request("predict", variant, version, 200, 0.001)
            answer = {"variant": variant, "version": version, "score": score}
            self._answer(200, json.dumps(answer).encode())

    return Handler


@contextmanager
def serving(standin: StandIn) -> Iterator[StandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
