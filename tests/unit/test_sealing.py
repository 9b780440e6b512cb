"""The simulated wallets' later signatures (cbdc.simulation.sealing): the very envelopes a key
seals at once, whether the worker process signs them or this thread does; bad messages fail at
once, as they do when sealed at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cbdc.client import build_capture, build_payment, build_payment_code, build_payment_request
from cbdc.client.builders import Sealer
from cbdc.client.keys import WalletKey
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import Envelope
from cbdc.domain.signing import sign_many
from cbdc.services import verifier
from cbdc.services.verifier import Signing
from cbdc.simulation import sealing
from cbdc.simulation.sealing import LaterSeals

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _envelopes(keys: list[Sealer], count: int) -> list[Envelope]:
    """``count`` envelopes of four kinds, signed by ``keys`` in turn."""
    built: list[Envelope] = []
    for n in range(count):
        key = keys[n % len(keys)]
        at = AT + timedelta(seconds=n)
        kind = n % 4
        if kind == 0:
            built.append(build_payment(key, ledger_id="L1", payment_id=f"pay{n}", payer=f"p{n}",
                                       payee="m1", amount_fen=100 + n, sequence=n + 1,
                                       created_at=at))
        elif kind == 1:
            built.append(build_payment_request(
                key, ledger_id="L1", request_id=f"rq{n}", merchant=f"m{n}", amount_fen=50 + n,
                reference=f"order-{n}", created_at=at, expires_at=at + timedelta(minutes=5)))
        elif kind == 2:
            built.append(build_payment_code(
                key, ledger_id="L1", code_id=f"code{n}", payer=f"p{n}", max_amount_fen=900,
                created_at=at, expires_at=at + timedelta(minutes=1)))
        else:
            built.append(build_capture(key, ledger_id="L1", capture_id=f"cap{n}",
                                       code_id=f"code{n}", merchant="m1", amount_fen=7,
                                       created_at=at))
    return built


@pytest.mark.parametrize("count", [1, sealing.CHUNK - 1, sealing.CHUNK, 5 * sealing.CHUNK + 3])
def test_later_envelopes_are_the_envelopes_sealed_at_once(count: int) -> None:
    keys = [WalletKey.derive(b"s" * 32, f"wallet-{n}") for n in range(3)]
    seals = LaterSeals()
    later = _envelopes([seals.key(key) for key in keys], count)
    assert all(envelope["signature"] == "" for envelope in later)  # not signed yet
    seals.settle()
    assert later == _envelopes(list(keys), count)
    seals.settle()  # nothing left: a second settle changes nothing
    assert later == _envelopes(list(keys), count)


def test_a_bad_message_fails_where_it_is_built_and_nothing_waits() -> None:
    key = WalletKey.derive(b"s" * 32, "wallet")
    seals = LaterSeals()
    with pytest.raises(CbdcError) as at_once:
        build_payment(key, ledger_id="L1", payment_id="pay 1", payer="p1", payee="m1",
                      amount_fen=1, sequence=1, created_at=AT)
    with pytest.raises(CbdcError) as later:
        build_payment(seals.key(key), ledger_id="L1", payment_id="pay 1", payer="p1",
                      payee="m1", amount_fen=1, sequence=1, created_at=AT)
    assert (later.value.code, str(later.value)) == (at_once.value.code, str(at_once.value))
    assert not seals._unsent and not seals._sent


def test_signatures_are_made_here_when_the_worker_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreachable() -> Any:
        raise OSError("no worker")

    monkeypatch.setattr(verifier, "_worker", unreachable)
    keys = [WalletKey.derive(b"s" * 32, f"wallet-{n}") for n in range(2)]
    seals = LaterSeals()
    later = _envelopes([seals.key(key) for key in keys], 3 * sealing.CHUNK)
    seals.settle()
    assert later == _envelopes(list(keys), 3 * sealing.CHUNK)


def test_the_worker_signs_as_the_key_pair_does() -> None:
    keys = [WalletKey.derive(b"w" * 32, f"key-{n}") for n in range(5)]
    jobs = [(key.seed + key.public_key, f"bytes {n}".encode()) for n, key in enumerate(keys)]
    expected = [key.sign_bytes(data) for key, (_, data) in zip(keys, jobs, strict=True)]
    assert sign_many(jobs) == expected
    assert Signing(jobs).result() == expected
    assert verifier._WORKER is not None and verifier._WORKER.alive()


def test_a_batch_of_thousands_of_envelopes_never_fills_the_workers_pipes() -> None:
    """More envelopes before one settle than the worker's answer pipe has room for (a batch at
    ``--scale 10``): the oldest chunks are read back on the way, so neither side ever waits for
    the other and the settle completes. (Unbounded, the worker blocked on its full answer pipe
    and the driver on the worker's full input: a run that never ended.) Run in a child process,
    so that a stall fails the test instead of hanging it."""
    program = textwrap.dedent("""
        from tests.unit.test_sealing import _envelopes
        from cbdc.client.keys import WalletKey
        from cbdc.simulation import sealing
        keys = [WalletKey.derive(b"s" * 32, f"wallet-{n}") for n in range(5)]
        seals = sealing.LaterSeals()
        later = _envelopes([seals.key(key) for key in keys], 4_000)  # 300 KB of answers
        assert len(seals._sent) <= sealing.IN_FLIGHT_MAX
        seals.settle()
        assert later == _envelopes(list(keys), 4_000)
        print("settled")
    """)
    try:
        finished = subprocess.run([sys.executable, "-c", program], capture_output=True,
                                  text=True, timeout=120, cwd=Path(__file__).parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail("sealing stalled: the worker's pipes filled up")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "settled"
