"""Ed25519 checks of a batch's signatures on a worker process, while the batch's own thread runs
its database checks (and, for the simulation's wallets, signatures made there while the driver
draws the rest of a batch: :class:`Signing`).

A second thread overlaps them poorly: each check is a short C call after which the thread must
take the GIL back, and the batch's thread holds it while it runs Python, for up to the
interpreter's switch interval (5 ms) at a time. The thread got through a few checks per batch,
and the batch's thread verified the rest itself. A worker process shares no GIL: it takes a
batch's ``(public key, signed bytes, signature)`` triples in one message over a pipe and
answers with one verdict per triple.

One worker serves the whole process: ``python -m cbdc.services.verifier``, started on first
use as a plain child program reading its standard input (not a :mod:`multiprocessing` child,
which would import the caller's main script again). A process forked after that starts its own.
Requests carry a number: a thread waiting for its verdicts reads the pipe and files whatever it
reads under its number, so any number of threads share the worker. If the worker cannot be
reached (it could not start, it died, or it has not answered for
:data:`ANSWER_TIMEOUT_SECONDS`), the batch's thread verifies the triples itself: a verdict is
always a check.

Frames on both pipes are an 8-byte big-endian length, then a pickle: ``(number, task, items)``
to the worker (its standard input), ``(number, answers)`` back (on a pipe of its own, named by
its one argument). The task is ``verify`` (items: triples; answers: verdicts) or ``sign``
(items: ``(secret key, bytes)`` jobs; answers: signatures). Both ends are this module.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from cbdc.domain.signing import sign_many, verify_many

Triple = tuple[bytes, bytes, bytes]
#: A signature to make: libsodium's 64-byte secret key (seed, then public key) and the bytes.
SigningJob = tuple[bytes, bytes]
_TASKS: dict[str, Callable[[Sequence[Any]], list[Any]]] = {
    "verify": verify_many, "sign": sign_many,
}
_ItemT = TypeVar("_ItemT")
_AnswerT = TypeVar("_AnswerT")

#: Fewer signatures than this are checked on the caller's thread at once: the round trip to the
#: worker would cost about as much as it saves.
WORKER_MIN = 16

#: How long a batch waits for its verdicts before it takes the worker for stuck: the worker is
#: stopped and the batch verifies its own signatures (a batch takes well under a second).
ANSWER_TIMEOUT_SECONDS = 60

_LENGTH_BYTES = 8


def _frame(value: Any) -> bytes:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return len(body).to_bytes(_LENGTH_BYTES, "big") + body


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The worker's loop: one frame of answers for each frame of work, until the input closes
    (the ledger's process ended or let the worker go)."""
    while True:
        header = requests.read(_LENGTH_BYTES)
        if len(header) < _LENGTH_BYTES:
            return
        body = requests.read(int.from_bytes(header, "big"))
        number, task, items = pickle.loads(body)
        answers.write(_frame((number, _TASKS[task](items))))
        answers.flush()


class _Worker:
    """The worker program, the pipe to its standard input, and a pipe of its own for the
    answers (so that nothing it prints while starting can be taken for one)."""

    def __init__(self) -> None:
        source_root = str(Path(__file__).resolve().parents[2])  # where ``cbdc`` is imported from
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [source_root, *filter(None, [environment.get("PYTHONPATH")])])
        self._answers, theirs = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cbdc.services.verifier", str(theirs)],
                stdin=subprocess.PIPE, pass_fds=(theirs,), env=environment,
            )
        except BaseException:
            os.close(self._answers)
            raise
        finally:
            os.close(theirs)
        assert self.process.stdin is not None
        self.requests: IO[bytes] = self.process.stdin
        self.pid = os.getpid()
        self._numbers = itertools.count()
        self._sending = threading.Lock()
        self._receiving = threading.Lock()
        self._arrived: dict[int, list[Any]] = {}
        self._unread = bytearray()

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, task: str, items: Sequence[Any]) -> int:
        with self._sending:
            number = next(self._numbers)
            self.requests.write(_frame((number, task, items)))
            self.requests.flush()
        return number

    def receive(self, number: int) -> list[Any]:
        with self._receiving:
            while number not in self._arrived:
                size = int.from_bytes(self._take(_LENGTH_BYTES), "big")
                arrived, answers = pickle.loads(self._take(size))
                self._arrived[arrived] = answers
            return self._arrived.pop(number)

    def _take(self, size: int) -> bytes:
        """``size`` bytes of the answers, waiting at most :data:`ANSWER_TIMEOUT_SECONDS` for
        each read."""
        waiting = select.poll()
        waiting.register(self._answers, select.POLLIN)
        while len(self._unread) < size:
            if not waiting.poll(ANSWER_TIMEOUT_SECONDS * 1000):
                self.process.kill()
                raise EOFError("the verifier did not answer in time")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise EOFError("the verifier's pipe closed")
            self._unread += chunk
        taken = bytes(self._unread[:size])
        del self._unread[:size]
        return taken

    def let_go(self) -> None:
        with contextlib.suppress(OSError):  # a broken pipe: nothing left to flush
            self.requests.close()
        with contextlib.suppress(OSError):
            os.close(self._answers)


_WORKER: _Worker | None = None
_STARTING = threading.Lock()


def _worker() -> _Worker:
    global _WORKER
    with _STARTING:
        if _WORKER is not None and _WORKER.pid == os.getpid():
            if _WORKER.alive():
                return _WORKER
            _WORKER.let_go()  # it died: start another
        elif _WORKER is None:
            atexit.register(_release)
        _WORKER = _Worker()
        return _WORKER


def _release() -> None:
    """At exit: close the worker's input, so that it ends, and wait for it."""
    worker = _WORKER
    if worker is None or worker.pid != os.getpid():
        return
    worker.let_go()
    try:
        worker.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()


class _Offloaded(Generic[_ItemT, _AnswerT]):
    """Work sent to the worker: :meth:`result` waits for its answers (or, if the worker cannot
    answer, does the work on this thread). Fewer than ``minimum`` items are done here and
    now."""

    def __init__(self, task: str, items: list[_ItemT], minimum: int) -> None:
        self._task = task
        self._items = items
        self._worker: _Worker | None = None
        self._number = -1
        self._answers: list[_AnswerT] | None = None
        if len(items) < minimum:
            self._answers = _TASKS[task](items)
            return
        try:
            self._worker = _worker()
            self._number = self._worker.send(task, items)
        except (OSError, EOFError, ValueError, TypeError, subprocess.SubprocessError):
            self._worker = None  # it could not start, or it died: done here

    def result(self) -> list[_AnswerT]:
        if self._answers is None:
            self._answers = self._from_worker()
            if self._answers is None:
                self._answers = _TASKS[self._task](self._items)
        return self._answers

    def _from_worker(self) -> list[_AnswerT] | None:
        if self._worker is None:
            return None
        try:
            answers = self._worker.receive(self._number)
        except (OSError, EOFError, ValueError, pickle.UnpicklingError):
            return None
        if len(answers) != len(self._items):  # not this request's: never trust a mix-up
            return None
        return answers


class Pending(_Offloaded[Triple, bool]):
    """Verdicts being checked on the worker: :meth:`result` waits for them (or, if the worker
    cannot answer, checks the triples on this thread). Fewer than :data:`WORKER_MIN` are
    checked here and now."""

    def __init__(self, triples: list[Triple]) -> None:
        super().__init__("verify", triples, WORKER_MIN)


class Signing(_Offloaded[SigningJob, bytes]):
    """Signatures being made on the worker: :meth:`result` waits for them (or, if the worker
    cannot answer, signs on this thread)."""

    def __init__(self, jobs: list[SigningJob]) -> None:
        super().__init__("sign", jobs, 1)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the ledger's to handle
    with open(int(sys.argv[1]), "wb") as answers_pipe:
        serve(sys.stdin.buffer, answers_pipe)
