"""The API as `cbdc serve` runs it (one uvicorn worker, SQLite), plus a bare JSON echo route
that exists only here: the same app's framework cost with no ledger work, for comparison."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import Body

from api.app import create_app


def main(port: int) -> None:
    app = create_app()

    def echo(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return body

    app.add_api_route("/bench/echo", echo, methods=["POST"], include_in_schema=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main(int(sys.argv[1]))
