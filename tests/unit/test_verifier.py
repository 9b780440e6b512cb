"""Signatures checked on the worker process: the same verdicts as checking them here, for any
number of threads at once, and still checks when the worker is gone."""

from __future__ import annotations

import os
import random
import signal
import threading

import nacl.signing
import pytest

from cbdc.domain.signing import verify_many
from cbdc.services import verifier
from cbdc.services.verifier import Pending, Triple


def _triples(seed: int, count: int) -> tuple[list[Triple], list[bool]]:
    """Signed messages, some of them forged in one of three ways; and which are genuine."""
    pick = random.Random(seed)
    triples: list[Triple] = []
    genuine: list[bool] = []
    for n in range(count):
        key = nacl.signing.SigningKey(pick.randbytes(32))
        data = f"cbdc/v1/test\x00message {seed}-{n}".encode()
        signature = key.sign(data).signature
        public_key = key.verify_key.encode()
        way = pick.randrange(5)
        if way == 0:
            data += b"!"
        elif way == 1:
            signature = bytes([signature[0] ^ 1]) + signature[1:]
        elif way == 2:
            public_key = nacl.signing.SigningKey(pick.randbytes(32)).verify_key.encode()
        triples.append((public_key, data, signature))
        genuine.append(way > 2)
    return triples, genuine


def test_the_worker_gives_the_verdicts_of_a_check_here() -> None:
    triples, genuine = _triples(1, 60)
    assert verify_many(triples) == genuine
    assert True in genuine and False in genuine
    assert Pending(triples).result() == genuine
    worker = verifier._WORKER
    assert worker is not None and worker.alive()
    assert worker.process.pid != os.getpid()


def test_threads_sharing_the_worker_each_get_their_own_verdicts() -> None:
    failures: list[str] = []

    def submit(thread: int) -> None:
        for round_ in range(15):
            triples, genuine = _triples(100 * thread + round_, 5 + (thread * 7 + round_) % 30)
            if Pending(triples).result() != genuine:
                failures.append(f"thread {thread}, round {round_}")

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_a_batch_sent_to_a_worker_that_then_died_is_checked_here() -> None:
    triples, genuine = _triples(2, 40)
    Pending(triples[:1]).result()  # a running worker
    worker = verifier._WORKER
    assert worker is not None
    os.kill(worker.process.pid, signal.SIGSTOP)  # it cannot answer what is sent now
    pending = Pending(triples)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    assert pending.result() == genuine
    replacement = Pending(triples).result()
    assert replacement == genuine
    assert verifier._WORKER is not worker and verifier._WORKER is not None
    assert verifier._WORKER.alive()


def test_a_worker_that_stops_answering_is_replaced_and_the_batch_checked_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verifier, "ANSWER_TIMEOUT_SECONDS", 0.5)
    triples, genuine = _triples(4, 30)
    Pending(triples[:20]).result()
    stuck = verifier._WORKER
    assert stuck is not None
    os.kill(stuck.process.pid, signal.SIGSTOP)
    assert Pending(triples).result() == genuine
    assert stuck.process.wait(timeout=10) == -signal.SIGKILL
    assert Pending(triples).result() == genuine
    assert verifier._WORKER is not stuck and verifier._WORKER is not None
    assert verifier._WORKER.alive()
