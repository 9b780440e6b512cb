"""Merchant flows on both engines: payment requests (QR), payment codes, refunds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from cbdc.client import (
    Envelope,
    build_capture,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
    decode_qr,
    verify_envelope,
    verify_receipt,
)
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import PAYMENT_REQUEST
from cbdc.domain.money import yuan
from cbdc.services import batches, keys, merchants, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.funding import top_up, withdraw
from cbdc.services.payments import (
    CodeCapture,
    MerchantRefund,
    Settlement,
    ledger_public_key_hex,
    settle_batch,
    settle_payment,
)
from tests.wallet_helpers import Holder, float_balance, funded_operator, new_wallet, snapshot


def balance(ledger: LedgerContext, wallet_id: str) -> int:
    return wallets.get_wallet(ledger, wallet_id).balance_fen


def refused(ledger: LedgerContext, code: str, attempt: Callable[[], Any]) -> CbdcError:
    before = snapshot(ledger)
    with pytest.raises(CbdcError) as error:
        attempt()
    assert error.value.code == code, error.value
    assert snapshot(ledger) == before
    return error.value


@pytest.fixture
def shop(ledger: LedgerContext) -> tuple[Holder, Holder]:
    """A noodle shop (corporate, MCC 5812, class 2) and a customer (class 3) with 1,000 CNY."""
    funded_operator(ledger)
    new_wallet(ledger, "w-noodles", 2, phone="+8613800000009", holder_kind="corporate",
               merchant_category_code="5812")
    new_wallet(ledger, "w-carol", 3)
    top_up(ledger, "t-carol", "w-carol", yuan(1_000))
    return Holder(ledger, "w-noodles"), Holder(ledger, "w-carol")


def request(ledger: LedgerContext, merchant: Holder, request_id: str, amount_fen: int,
            *, minutes: int = 5) -> Envelope:
    return build_payment_request(
        merchant.key, ledger_id=ledger.ledger_id, request_id=request_id,
        merchant=merchant.wallet_id, amount_fen=amount_fen, reference=f"table {request_id}",
        expires_at=ledger.now() + timedelta(minutes=minutes), created_at=ledger.now(),
    )


def pay_request(ledger: LedgerContext, payer: Holder, qr: str, payment_id: str) -> Envelope:
    """What the payer's app does: decode the QR, verify the merchant's signature, sign a payment."""
    message = verify_envelope(decode_qr(qr), PAYMENT_REQUEST)
    return build_payment_for_request(payer.key, message, payment_id=payment_id,
                                     payer=payer.wallet_id, sequence=payer.sequence.next(),
                                     created_at=ledger.now())


def test_a_payment_request_is_paid_once_by_qr(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    noodles, carol = shop
    envelope = request(ledger, noodles, "req-1", yuan(38))
    created = merchants.create_payment_request(ledger, envelope)
    assert (created.status, created.amount_fen, created.merchant) == ("open", yuan(38),
                                                                       "w-noodles")
    assert created.qr.startswith("CBDC1:")
    assert decode_qr(created.qr) == envelope
    assert merchants.create_payment_request(ledger, envelope) == created

    settlement = settle_payment(ledger, pay_request(ledger, carol, created.qr, "p-1"))
    assert (settlement.payee, settlement.amount_fen) == ("w-noodles", yuan(38))
    assert merchants.get_payment_request(ledger, "req-1").status == "paid"
    assert balance(ledger, "w-noodles") == yuan(38)

    new_wallet(ledger, "w-dan", 4, phone="+8613800000004")
    top_up(ledger, "t-dan", "w-dan", yuan(100))
    dan = Holder(ledger, "w-dan")
    refused(ledger, "payment_request_paid", lambda: settle_payment(
        ledger, pay_request(ledger, dan, created.qr, "p-2")))
    assert run_audit(ledger).ok


def test_payment_request_refusals(ledger: LedgerContext, shop: tuple[Holder, Holder]) -> None:
    noodles, carol = shop
    created = merchants.create_payment_request(ledger, request(ledger, noodles, "req-1", yuan(38)))
    other = request(ledger, noodles, "req-1", yuan(39))
    refused(ledger, "payment_request_conflict",
            lambda: merchants.create_payment_request(ledger, other))
    refused(ledger, "not_a_merchant", lambda: merchants.create_payment_request(
        ledger, request(ledger, carol, "req-2", yuan(1))))
    stale = request(ledger, noodles, "req-3", yuan(1), minutes=1)
    ledger.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    refused(ledger, "payment_request_expired",
            lambda: merchants.create_payment_request(ledger, stale))

    wrong_amount = carol.payment("w-noodles", yuan(37), "p-1", request_id="req-1")
    refused(ledger, "payment_request_mismatch", lambda: settle_payment(ledger, wrong_amount))
    unknown = carol.payment("w-noodles", yuan(38), "p-1", request_id="req-404")
    refused(ledger, "payment_request_not_found", lambda: settle_payment(ledger, unknown))
    ledger.clock.advance(timedelta(minutes=4))  # type: ignore[attr-defined]
    late = pay_request(ledger, carol, created.qr, "p-1")
    refused(ledger, "payment_request_expired", lambda: settle_payment(ledger, late))


def code_and_capture(
    ledger: LedgerContext, payer: Holder, merchant: Holder, code_id: str, capture_id: str,
    amount_fen: int, *, max_amount_fen: int, for_merchant: str | None = None, seconds: int = 60,
) -> tuple[Envelope, Envelope]:
    code = build_payment_code(
        payer.key, ledger_id=ledger.ledger_id, code_id=code_id, payer=payer.wallet_id,
        max_amount_fen=max_amount_fen, expires_at=ledger.now() + timedelta(seconds=seconds),
        created_at=ledger.now(), merchant=for_merchant,
    )
    capture = build_capture(
        merchant.key, ledger_id=ledger.ledger_id, capture_id=capture_id, code_id=code_id,
        merchant=merchant.wallet_id, amount_fen=amount_fen, created_at=ledger.now(),
    )
    return code, capture


def test_a_payment_code_is_captured_once_within_its_maximum_and_expiry(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    noodles, carol = shop
    code, capture = code_and_capture(ledger, carol, noodles, "code-1", "cap-1", yuan(45),
                                     max_amount_fen=yuan(50), for_merchant="w-noodles")
    settlement = merchants.capture_payment_code(ledger, code, capture)
    assert (settlement.kind, settlement.payer, settlement.amount_fen) == (
        "capture", "w-carol", yuan(45)
    )
    assert verify_receipt(settlement.receipt, ledger_public_key_hex(ledger))["kind"] == "capture"
    assert merchants.capture_payment_code(ledger, code, capture) == replace(settlement,
                                                                            replayed=True)
    second = build_capture(noodles.key, ledger_id=ledger.ledger_id, capture_id="cap-2",
                           code_id="code-1", merchant="w-noodles", amount_fen=yuan(1),
                           created_at=ledger.now())
    refused(ledger, "payment_code_used",
            lambda: merchants.capture_payment_code(ledger, code, second))
    assert wallets.get_wallet(ledger, "w-carol").usage.spent_day_fen == yuan(45)
    # A capture is refunded like a payment, by its capture id.
    merchants.refund(ledger, refund_of(ledger, noodles, "r-cap", "cap-1", yuan(5)))

    over, capture = code_and_capture(ledger, carol, noodles, "code-2", "cap-3", yuan(51),
                                     max_amount_fen=yuan(50))
    refused(ledger, "payment_code_amount_exceeded",
            lambda: merchants.capture_payment_code(ledger, over, capture))
    elsewhere, capture = code_and_capture(ledger, carol, noodles, "code-3", "cap-4", yuan(5),
                                          max_amount_fen=yuan(50), for_merchant="w-other")
    refused(ledger, "capture_mismatch",
            lambda: merchants.capture_payment_code(ledger, elsewhere, capture))
    late, capture = code_and_capture(ledger, carol, noodles, "code-4", "cap-5", yuan(5),
                                     max_amount_fen=yuan(50), seconds=30)
    ledger.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    refused(ledger, "payment_code_expired",
            lambda: merchants.capture_payment_code(ledger, late, capture))
    revoked, capture = code_and_capture(ledger, carol, noodles, "code-5", "cap-6", yuan(5),
                                        max_amount_fen=yuan(50))
    keys.revoke_key(ledger, carol.key.public_key_hex)
    refused(ledger, "public_key_revoked",
            lambda: merchants.capture_payment_code(ledger, revoked, capture))
    assert balance(ledger, "w-carol") == yuan(960)
    assert run_audit(ledger).ok


def test_only_a_merchant_captures_a_payment_code(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """Carol shows a code for 30 CNY. Dan, a personal wallet, scans it and tries to collect:
    refused (``not_a_merchant``), and nothing moves, so the code is still good and the noodle
    shop captures it a minute later. The check comes after the wallets' statuses and before the
    code's expiry: a frozen Dan is told he is frozen, an expired code shown to Dan is still
    refused because Dan is no merchant."""
    noodles, carol = shop
    new_wallet(ledger, "w-dan", 4, phone="+8613800000004")
    dan = Holder(ledger, "w-dan")
    code, by_dan = code_and_capture(ledger, carol, dan, "code-1", "cap-dan", yuan(30),
                                    max_amount_fen=yuan(30), seconds=120)
    refused(ledger, "not_a_merchant",
            lambda: merchants.capture_payment_code(ledger, code, by_dan))
    ledger.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    by_shop = build_capture(noodles.key, ledger_id=ledger.ledger_id, capture_id="cap-shop",
                            code_id="code-1", merchant="w-noodles", amount_fen=yuan(30),
                            created_at=ledger.now())
    settlement = merchants.capture_payment_code(ledger, code, by_shop)
    assert (settlement.payer, settlement.payee, settlement.amount_fen) == (
        "w-carol", "w-noodles", yuan(30))
    assert (balance(ledger, "w-carol"), balance(ledger, "w-noodles")) == (yuan(970), yuan(30))

    late, by_dan = code_and_capture(ledger, carol, dan, "code-2", "cap-dan-2", yuan(1),
                                    max_amount_fen=yuan(5), seconds=30)
    ledger.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
    refused(ledger, "not_a_merchant", lambda: merchants.capture_payment_code(ledger, late, by_dan))
    wallets.freeze(ledger, "w-dan")
    refused(ledger, "wallet_frozen",
            lambda: merchants.capture_payment_code(ledger, late, by_dan))
    assert run_audit(ledger).ok


def test_worked_example_a_lunchtime_batch_settles_payments_and_captures_together(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """At 12:30 the ledger settles one batch: Carol pays the noodle shop's QR request (38 CNY),
    the shop captures Erin's code (45 CNY), captures it again under another id (refused: the
    code is used), Dan tries to collect Erin's second code (refused: not a merchant), and Erin
    sends Carol 20 CNY. What settles is posted in one go, in batch order; the refusals change
    nothing; every answer is what the command would have got alone."""
    noodles, carol = shop
    new_wallet(ledger, "w-erin", 3, phone="+8613800000005")
    top_up(ledger, "t-erin", "w-erin", yuan(200))
    new_wallet(ledger, "w-dan", 4, phone="+8613800000004")
    erin, dan = Holder(ledger, "w-erin"), Holder(ledger, "w-dan")
    noodles_qr = merchants.create_payment_request(ledger, request(ledger, noodles, "req-1",
                                                                  yuan(38)))
    code, capture = code_and_capture(ledger, erin, noodles, "code-e1", "cap-1", yuan(45),
                                     max_amount_fen=yuan(50))
    _, again = code_and_capture(ledger, erin, noodles, "code-e1", "cap-2", yuan(5),
                                max_amount_fen=yuan(50))
    second_code, by_dan = code_and_capture(ledger, erin, dan, "code-e2", "cap-3", yuan(5),
                                           max_amount_fen=yuan(5))
    answers = settle_batch(ledger, [
        pay_request(ledger, carol, noodles_qr.qr, "p-carol"),
        CodeCapture(code, capture),
        CodeCapture(code, again),
        CodeCapture(second_code, by_dan),
        erin.payment("w-carol", yuan(20), "p-erin"),
    ])
    outcomes = [a.code if isinstance(a, CbdcError) else (a.kind, a.amount_fen) for a in answers]
    assert outcomes == [("payment", yuan(38)), ("capture", yuan(45)), "payment_code_used",
                        "not_a_merchant", ("payment", yuan(20))]
    settled = [a for a in answers if isinstance(a, Settlement)]
    assert [s.entry_seq for s in settled] == list(range(settled[0].entry_seq,
                                                        settled[0].entry_seq + 3))
    assert balance(ledger, "w-noodles") == yuan(38 + 45)
    assert balance(ledger, "w-erin") == yuan(200 - 45 - 20)
    assert balance(ledger, "w-carol") == yuan(1_000 - 38 + 20)
    assert merchants.get_payment_request(ledger, "req-1").status == "paid"
    # The used code stays used outside the batch, and Dan's refusal left code-e2 unused.
    refused(ledger, "payment_code_used",
            lambda: merchants.capture_payment_code(ledger, code, again))
    _, by_shop = code_and_capture(ledger, erin, noodles, "code-e2", "cap-4", yuan(5),
                                  max_amount_fen=yuan(5))
    assert merchants.capture_payment_code(ledger, second_code, by_shop).amount_fen == yuan(5)
    assert run_audit(ledger).ok


def test_a_batch_of_payment_requests_answers_each_as_alone(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """The shop presents four QR codes at once: a new one, the same one again (its record),
    one reusing that id with another amount (conflict), and Carol, no merchant, presents one."""
    noodles, carol = shop
    first = request(ledger, noodles, "req-1", yuan(38))
    answers = merchants.create_payment_requests(ledger, [
        first, first, request(ledger, noodles, "req-1", yuan(39)),
        request(ledger, carol, "req-2", yuan(1)),
    ])
    created, repeat, clash, not_merchant = answers
    assert isinstance(created, merchants.PaymentRequest) and repeat == created
    assert created == merchants.get_payment_request(ledger, "req-1")
    assert isinstance(clash, CbdcError) and clash.code == "payment_request_conflict"
    assert isinstance(not_merchant, CbdcError) and not_merchant.code == "not_a_merchant"


def refund_of(ledger: LedgerContext, merchant: Holder, refund_id: str, payment_id: str,
              amount_fen: int, *, merchant_id: str | None = None) -> Envelope:
    return build_refund(merchant.key, ledger_id=ledger.ledger_id, refund_id=refund_id,
                        payment_id=payment_id, merchant=merchant_id or merchant.wallet_id,
                        amount_fen=amount_fen, created_at=ledger.now())


def test_worked_example_a_merchant_refunds_half_twice_and_fails_the_third_time(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """Carol pays 100 CNY for two bowls; the shop refunds 50 for a cold one, then 50 for the
    other; a third refund of even 0.01 CNY is refused: the payment is fully refunded."""
    noodles, carol = shop
    carol.pay("w-noodles", yuan(100), "p-bowls")
    first = merchants.refund(ledger, refund_of(ledger, noodles, "r-1", "p-bowls", yuan(50)))
    assert (first.kind, first.payer, first.payee) == ("refund", "w-noodles", "w-carol")
    assert verify_receipt(first.receipt, ledger_public_key_hex(ledger))["receipt_for"] == "r-1"
    merchants.refund(ledger, refund_of(ledger, noodles, "r-2", "p-bowls", yuan(50)))
    assert (balance(ledger, "w-carol"), balance(ledger, "w-noodles")) == (yuan(1_000), 0)
    error = refused(ledger, "refund_exceeds_payment", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-3", "p-bowls", 1)))
    assert error.extra["refundable_fen"] == 0
    # A repeat of a refund that went through is its first result, not a refusal.
    again = merchants.refund(ledger, refund_of(ledger, noodles, "r-1", "p-bowls", yuan(50)))
    assert again == replace(first, replayed=True)
    # Refunds do not give back spending headroom: the counters only ever grow.
    assert wallets.get_wallet(ledger, "w-carol").usage.spent_day_fen == yuan(100)
    # And the database itself refuses to record more refunded than paid.
    with pytest.raises(IntegrityError), ledger.write() as connection:
        connection.execute(text(
            "UPDATE payments SET refunded_fen = refunded_fen + 1 WHERE payment_id = 'p-bowls'"
        ))
    assert run_audit(ledger).ok


def test_worked_example_refunds_settle_in_a_batch_with_the_payment_they_refund(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """One batch: Carol pays 100 CNY, the shop refunds 60 of it, then tries 60 more (40 are
    left), then sends its first refund again. Each is answered as one by one, and the batch
    settles in one go: what is left to refund is kept as the batch goes, not found out from the
    database's CHECK (which would send the batch back to one by one)."""
    noodles, carol = shop
    with mock.patch.object(batches, "_alone", side_effect=AssertionError("fell back")):
        answers = settle_batch(ledger, [
            carol.payment("w-noodles", yuan(100), "p-bowls"),
            MerchantRefund(refund_of(ledger, noodles, "r-1", "p-bowls", yuan(60))),
            MerchantRefund(refund_of(ledger, noodles, "r-2", "p-bowls", yuan(60))),
            MerchantRefund(refund_of(ledger, noodles, "r-1", "p-bowls", yuan(60))),
        ])
    paid, first, over, again = answers
    assert isinstance(paid, Settlement) and isinstance(first, Settlement)
    assert (first.kind, first.payer, first.payee, first.amount_fen) == (
        "refund", "w-noodles", "w-carol", yuan(60))
    assert isinstance(over, CbdcError) and over.code == "refund_exceeds_payment"
    assert over.extra["refundable_fen"] == yuan(40)
    assert again == replace(first, replayed=True)
    assert (balance(ledger, "w-carol"), balance(ledger, "w-noodles")) == (yuan(960), yuan(40))
    # The refunded total is stored: 40 CNY are left, and no more.
    refused(ledger, "refund_exceeds_payment", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-3", "p-bowls", yuan(40) + 1)))
    merchants.refund(ledger, refund_of(ledger, noodles, "r-3", "p-bowls", yuan(40)))
    assert run_audit(ledger).ok


def test_refund_refusals(ledger: LedgerContext, shop: tuple[Holder, Holder]) -> None:
    noodles, carol = shop
    carol.pay("w-noodles", yuan(100), "p-1")
    withdraw(ledger, "d-1", "w-noodles", yuan(80))
    refused(ledger, "insufficient_funds", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-1", "p-1", yuan(30))))
    refused(ledger, "payment_not_found", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-1", "p-404", yuan(1))))
    refused(ledger, "refund_mismatch", lambda: merchants.refund(
        ledger, refund_of(ledger, carol, "r-1", "p-1", yuan(1), merchant_id="w-carol")))
    impostor = carol.key.seal({**refund_of(ledger, noodles, "r-1", "p-1", yuan(1))["message"],
                               "public_key": carol.key.public_key_hex})
    refused(ledger, "public_key_wallet_mismatch", lambda: merchants.refund(ledger, impostor))
    merchants.refund(ledger, refund_of(ledger, noodles, "r-1", "p-1", yuan(20)))
    refused(ledger, "refund_invalid", lambda: merchants.refund(
        ledger, refund_of(ledger, carol, "r-2", "r-1", yuan(1), merchant_id="w-carol")))
    refused(ledger, "refund_conflict", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-1", "p-1", yuan(19))))
    wallets.freeze(ledger, "w-carol")
    top_up(ledger, "t-2", "w-noodles", yuan(100))
    refused(ledger, "wallet_frozen", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-3", "p-1", yuan(1))))


def test_a_refund_over_the_customers_cap_waterfalls_or_is_refused(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    noodles, carol = shop
    new_wallet(ledger, "w-erin", 2, phone="+8613800000005")
    top_up(ledger, "t-erin", "w-erin", yuan(1_000))
    erin = Holder(ledger, "w-erin")
    carol.pay("w-noodles", yuan(500), "p-carol")
    erin.pay("w-noodles", yuan(500), "p-erin")
    top_up(ledger, "t-carol-2", "w-carol", yuan(19_500))  # class 3: at the 20,000 cap
    refused(ledger, "balance_limit_exceeded", lambda: merchants.refund(
        ledger, refund_of(ledger, noodles, "r-carol", "p-carol", yuan(500))))
    top_up(ledger, "t-erin-2", "w-erin", yuan(499_500))  # class 2: at the 500,000 cap
    float_before = float_balance(ledger)
    swept = merchants.refund(ledger, refund_of(ledger, noodles, "r-erin", "p-erin", yuan(500)))
    assert swept.swept_fen == yuan(500)
    assert balance(ledger, "w-erin") == yuan(500_000)
    assert float_balance(ledger) == float_before + yuan(500)
    assert run_audit(ledger).ok


def test_a_payment_and_a_capture_racing_for_one_id_settle_once(
    ledger: LedgerContext, shop: tuple[Holder, Holder]
) -> None:
    """Disjoint wallets lock disjoint rows, so only the unique payment id stops the second."""
    noodles, carol = shop
    new_wallet(ledger, "w-alice", 4, phone="+8613800000011")
    new_wallet(ledger, "w-bob", 4, phone="+8613800000012")
    top_up(ledger, "t-alice", "w-alice", yuan(100))
    alice = Holder(ledger, "w-alice")
    payment = alice.payment("w-bob", yuan(10), "x-1")
    code, capture = code_and_capture(ledger, carol, noodles, "code-x", "x-1", yuan(10),
                                     max_amount_fen=yuan(10))

    start = threading.Barrier(20)

    def submit(index: int) -> Settlement | CbdcError:
        start.wait()
        try:
            if index % 2:
                return settle_payment(ledger, payment)
            return merchants.capture_payment_code(ledger, code, capture)
        except CbdcError as error:
            return error

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(submit, range(20)))
    fresh = [r for r in results if isinstance(r, Settlement) and not r.replayed]
    assert len(fresh) == 1
    winner = fresh[0].kind
    loser = "capture" if winner == "payment" else "payment"
    for result in results:
        if isinstance(result, Settlement):
            assert (result.kind, result.entry_seq) == (winner, fresh[0].entry_seq)
        else:
            assert result.code == f"{loser}_conflict", result
    moved = {"payment": ("w-bob", yuan(10)), "capture": ("w-noodles", yuan(10))}
    payee, amount = moved[winner]
    assert balance(ledger, payee) == amount
    other_payee, _ = moved[loser]
    assert balance(ledger, other_payee) == 0
    assert run_audit(ledger).ok
