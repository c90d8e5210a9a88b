"""The ASGI guard in front of every route: API key, body size limit, request counting.

Pure ASGI on purpose: Starlette's BaseHTTPMiddleware would sit between the streaming response
and the client and hide disconnects, which must reach the handler at once so the request is
aborted and its KV freed.

Invariants: with an API key set, nothing under /v1 or /debug runs without
``Authorization: Bearer <key>`` (constant-time comparison); no handler ever sees a body over
``max_body_bytes`` (checked on Content-Length and again while reading, for chunked bodies).
"""
from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from continuum.entrypoints.openai.errors import OpenAIError
from continuum.entrypoints.openai.metrics import ServerMetrics

PROTECTED_PREFIXES = ("/v1", "/debug")
KNOWN_ROUTES = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/version",
                "/metrics", "/debug/kv", "/debug/replicas"}


class GuardMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics, api_key: str | None = None,
                 max_body_bytes: int = 16 * 2**20):
        self.app, self.metrics = app, metrics
        self._expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for k, v in scope.get("headers", ()):
            if k == b"authorization":
                given = v
        return hmac.compare_digest(given, self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        status = [500]

        async def send_and_record(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            if self._expected is not None and path.startswith(PROTECTED_PREFIXES) \
                    and not self._authorized(scope):
                err = OpenAIError(401, "invalid or missing API key (use 'Authorization: Bearer "
                                  "<key>')", code="invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
                await err.response()(scope, receive, send_and_record)
                return
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                receive = await self._buffer_body(scope, receive, send_and_record)
                if receive is None:
                    return
            await self.app(scope, receive, send_and_record)
        finally:
            route = path if path in KNOWN_ROUTES else "other"
            self.metrics.http_requests.labels(route, str(status[0])).inc()
            if status[0] == 503:
                self.metrics.rejected.labels("overloaded").inc()

    async def _buffer_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body (bounded), then replay it once; None if already answered."""
        too_big = OpenAIError(413, f"request body exceeds {self.max_body_bytes} bytes",
                              code="request_too_large")
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    if int(v) > self.max_body_bytes:
                        await too_big.response()(scope, receive, send)
                        return None
                except ValueError:
                    await OpenAIError(400, "bad Content-Length").response()(scope, receive, send)
                    return None
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None                      # client gone before sending its body
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await too_big.response()(scope, receive, send)
                return None
            chunks.append(body)
            more = msg.get("more_body", False)
        replayed = [False]
        body = b"".join(chunks)

        async def replay() -> Message:
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()             # later calls: wait for http.disconnect

        return replay
