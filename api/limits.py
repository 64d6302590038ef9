"""The largest request body the API reads (``api.max_body_bytes``): a longer body, declared or
streamed, is answered 413 before any route parses it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import TYPE_PREFIX, problem_response


class BodyLimit:
    """Reads a request's body (up to the limit) before the app does, and refuses a longer one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        first: Message
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client went away: the app hears it first
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            413,
            TYPE_PREFIX + "body-too-large",
            "Request body too large",
            f"The request's body is longer than {self.max_bytes} bytes, the most this API reads. "
            "Send a smaller body.",
        )
        await response(scope, receive, send)
