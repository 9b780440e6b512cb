"""Requests per second over HTTP: submitting a signed payment, next to the same app's bare JSON
echo route measured in the same run, and the batch endpoint's payments per second.

One uvicorn worker on SQLite in its own process; the load comes from another process on
127.0.0.1 (keep-alive connections on a few threads), each measurement bounded in time. The load
generator shares the machine's two cores with the server, so both rates are what this machine
does end to end; the ratio is the point."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Row, print_rows
from benchmarks.payments import Population
from cbdc.services.apikeys import create_api_key

SECONDS = 5.0
THREADS = 4
BATCH = 1_000
BATCHES = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(connection: http.client.HTTPConnection, path: str, body: bytes,
          headers: dict[str, str]) -> int:
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _load(port: int, path: str, bodies: list[bytes], headers: dict[str, str],
          seconds: float, out: Any) -> None:
    """Runs in the load process: POST ``bodies`` round robin on THREADS keep-alive connections
    for ``seconds``; report (requests done, non-2xx seen)."""
    counts = [0] * THREADS
    errors = [0] * THREADS
    deadline = time.perf_counter() + seconds

    def worker(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port)
        position = n
        while time.perf_counter() < deadline and position < len(bodies):
            status = _post(connection, path, bodies[position],
                           {**headers, "Idempotency-Key": str(uuid.uuid4())})
            errors[n] += status >= 300
            counts[n] += 1
            position += THREADS

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((sum(counts), sum(errors), time.perf_counter() - start))


def _measure(port: int, path: str, bodies: list[bytes], headers: dict[str, str]) -> float:
    queue: Any = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=_load, args=(port, path, bodies, headers, SECONDS, queue))
    process.start()
    done, errors, elapsed = queue.get()
    process.join()
    assert errors == 0, f"{errors} of {done} requests to {path} failed"
    return float(done / elapsed)


def _wait_until_up(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            raise RuntimeError("the API server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the API server did not come up")


def main() -> list[Row]:
    population = Population()
    url = population.context.engine.url.render_as_string(hide_password=False)
    _, api_key = create_api_key(population.context, "BENCH")
    payments = [json.dumps(p).encode() for p in population.payments(40_000)]
    batches = [json.dumps({"payments": population.payments(BATCH)}).encode()
               for _ in range(BATCHES)]
    population.context.dispose()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.http_server", str(port)],
        env={**os.environ, "CBDC_DATABASE_URL": url}, cwd=Path(__file__).parents[1],
    )
    try:
        _wait_until_up(port, server)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        echo = _measure(port, "/bench/echo", payments, headers)
        paid = _measure(port, "/v1/payments", payments, headers)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start = time.perf_counter()
        for body in batches:
            status = _post(connection, "/v1/payments/batch", body,
                           {**headers, "Idempotency-Key": str(uuid.uuid4())})
            assert status == 200, status
        batch_rate = BATCH * BATCHES / (time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = [
        Row("POST /v1/payments (signed payment)", paid, "POST echo, same app", echo, goal=0.4),
        Row(f"POST /v1/payments/batch ({BATCH} per request), payments/s", batch_rate,
            "POST echo, same app", echo),
    ]
    print_rows("HTTP API, one uvicorn worker on SQLite (per second)", rows)
    return rows


if __name__ == "__main__":
    main()
