"""The request body cap, as plain ASGI middleware in front of everything else.

A declared ``Content-Length`` above the cap is refused before a byte of the body is read; a
chunked body is counted as it streams and refused as soon as it passes the cap. Either way the
answer is a ``body_too_large`` 413 problem and the application never sees the body.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem, problem_response

DEFAULT_MAX_BODY_BYTES = 1 << 20


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI passes its own HTTPException through body parsing, so
    the app's handler answers 413; anything else there would become a 400."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, _detail(max_body_bytes), headers={"Connection": "close"})


def _detail(max_body_bytes: int) -> str:
    return f"the request body is larger than {max_body_bytes} bytes"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        document = problem(
            413, "body_too_large", _detail(self.max_body_bytes),
            instance=scope.get("path"),
        )
        await problem_response(document, {"Connection": "close"})(scope, receive, send)


def _content_length(scope: dict[str, Any] | Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
