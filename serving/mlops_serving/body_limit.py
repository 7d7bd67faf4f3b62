"""A request body limit, enforced before the body is in memory.

Neither Starlette nor uvicorn limits the size of a request body: ``await request.body()``
buffers whatever arrives (a 1 GB upload left the process with 1.1 GB of RSS). This pure ASGI
middleware (no ``BaseHTTPMiddleware``, which would wrap every request in a task and a stream)
answers 413 for a declared ``Content-Length`` over the limit without reading anything, and counts
the bytes of a body without one (chunked) as the app receives them, stopping at the limit. Either
way uvicorn discards the rest of the body as it arrives (it never buffers more than 64 kB for an
app that is not reading), so memory stays bounded by the limit.

A request within its declared ``Content-Length`` passes with the server's own ``receive``: the
HTTP parser never delivers more than the declared length, and the hot path pays nothing more.
"""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Any  # async () -> Message
Send = Any  # async (Message) -> None
ASGIApp = Any  # async (Scope, Receive, Send) -> None


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body without a declared length passes the limit."""


class BodySizeLimit:
    """413 for request bodies larger than ``max_bytes``."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, setting: str = "SERVING_MAX_BODY_BYTES"
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._detail = orjson.dumps(
            {
                "detail": f"request body exceeds the limit of {max_bytes} bytes ({setting}); "
                "split the request"
            }
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._reject(send)
            else:
                await self.app(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # an app that answered before reading all of it: nothing to add
                raise
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self._detail)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self._detail})


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None without one (chunked) or with one that is not a number
    (then the bytes are counted as for a chunked body)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
