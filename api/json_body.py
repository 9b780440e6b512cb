"""Request bodies read with the protocol's JSON rules (:mod:`cbdc.domain.strict_json`).

FastAPI reads a JSON body with Python's ``json.loads``, which keeps the last of two equal keys
and takes ``NaN``: a signed payment sent as ``{"amount_fen": 1, "amount_fen": 1850, ...}``
would be read as 1850 here and as 1 by a reader that keeps the first. Every router of the API
uses :class:`StrictJsonRoute`, whose requests read their bodies with ``loads_strict``; a
refused body is a ``request_invalid`` problem like any other body that is not JSON, and the
route never runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from cbdc.domain.strict_json import JsonRefused, loads_strict


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads_strict(body)
            except JsonRefused as refused:
                # FastAPI answers a JSONDecodeError as its json_invalid validation error; its
                # position is the parser's where it has one.
                cause = refused.__cause__
                if isinstance(cause, json.JSONDecodeError):
                    raise cause from refused
                raise json.JSONDecodeError(str(refused), body.decode("utf-8", "replace"),
                                           0) from refused
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_handler
