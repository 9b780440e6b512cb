"""Every field of every signed message the online ledger takes, replaced by a value of another
type or out of range, removed, or joined by an unknown one; the envelope's signature and the
message itself replaced the same way. Each such command is refused with one of our error codes,
no other exception escapes its batch, and the genuine command sent after them settles as if
they had not been there: malformed input changes nothing (both engines)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from cbdc.client import (
    Envelope,
    build_capture,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
)
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import AMOUNT_FEN_MAX, yuan
from cbdc.services import merchants, offline
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.funding import top_up
from cbdc.services.payments import CodeCapture, MerchantRefund, settle_batch
from cbdc.storage.tables import journal_entries, payment_requests
from tests.offline_helpers import OfflineLedger
from tests.wallet_helpers import Holder, funded_operator, new_wallet

#: Values of every JSON type but the right one, and the right types out of range.
ODD_VALUES: tuple[Any, ...] = (
    ["x"], {"k": 1}, 1.5, True, None, 2**70, -1, 0, "", "x" * 300, "\u202e", "1",
)


def _odd_messages(message: dict[str, Any]) -> Iterator[Any]:
    for name in sorted(message):
        for value in ODD_VALUES:
            original = message[name]
            if type(value) is type(original) and value == original:
                continue
            yield {**message, name: value}
        yield {key: value for key, value in message.items() if key != name}
    yield {**message, "unknown_field": 1}
    yield from ODD_VALUES


def malformed(envelope: Mapping[str, Any]) -> list[Any]:
    """``envelope`` spoilt in every way above, one way per copy."""
    spoilt: list[Any] = [{**envelope, "message": message}
                         for message in _odd_messages(dict(envelope["message"]))]
    spoilt += [{**envelope, "signature": value} for value in ODD_VALUES]
    spoilt += [{"message": envelope["message"]}, {**envelope, "extra": 1}, *ODD_VALUES]
    return spoilt


class Shop:
    """A merchant (class 2) and a customer (class 3, 1,000 CNY) of one operator."""

    def __init__(self, ledger: LedgerContext) -> None:
        funded_operator(ledger)
        new_wallet(ledger, "w-tea", 2, phone="+8613800000021", holder_kind="corporate",
                   merchant_category_code="5812")
        new_wallet(ledger, "w-dan", 3, phone="+8613800000022")
        top_up(ledger, "t-dan", "w-dan", yuan(1_000))
        self.ledger = ledger
        self.merchant = Holder(ledger, "w-tea")
        self.customer = Holder(ledger, "w-dan")

    def request(self, request_id: str) -> Envelope:
        now = self.ledger.now()
        return build_payment_request(
            self.merchant.key, ledger_id=self.ledger.ledger_id, request_id=request_id,
            merchant="w-tea", amount_fen=yuan(12), reference=f"order {request_id}",
            expires_at=now + timedelta(minutes=5), created_at=now,
        )

    def code_and_capture(self, number: int) -> tuple[Envelope, Envelope]:
        now = self.ledger.now()
        code = build_payment_code(
            self.customer.key, ledger_id=self.ledger.ledger_id, code_id=f"code-{number}",
            payer="w-dan", max_amount_fen=yuan(30), expires_at=now + timedelta(minutes=1),
            created_at=now,
        )
        capture = build_capture(
            self.merchant.key, ledger_id=self.ledger.ledger_id, capture_id=f"cap-{number}",
            code_id=f"code-{number}", merchant="w-tea", amount_fen=yuan(25), created_at=now,
        )
        return code, capture

    def refund(self, refund_id: str, payment_id: str) -> Envelope:
        return build_refund(
            self.merchant.key, ledger_id=self.ledger.ledger_id, refund_id=refund_id,
            payment_id=payment_id, merchant="w-tea", amount_fen=yuan(1),
            created_at=self.ledger.now(),
        )


@pytest.fixture
def shop(ledger: LedgerContext) -> Shop:
    return Shop(ledger)


def _count(ledger: LedgerContext, table: Any) -> int:
    with ledger.read() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _all_refused_but_the_last(
    ledger: LedgerContext, answer: Callable[[Sequence[Any]], Sequence[Any]],
    spoilt: list[Any], genuine: Any, table: Any, rows_added: int,
) -> None:
    before = _count(ledger, table)
    answers = answer([*spoilt, genuine])
    assert len(answers) == len(spoilt) + 1
    wrong = [(index, answer) for index, answer in enumerate(answers[:-1])
             if not isinstance(answer, CbdcError)]
    assert wrong == [], [spoilt[index] for index, _ in wrong]
    assert not isinstance(answers[-1], CbdcError), answers[-1]
    assert _count(ledger, table) == before + rows_added
    assert run_audit(ledger).ok


def test_spoilt_payments_are_refused_and_the_genuine_one_settles(shop: Shop) -> None:
    genuine = shop.customer.payment("w-tea", yuan(8), "pay-genuine")
    _all_refused_but_the_last(shop.ledger, lambda items: settle_batch(shop.ledger, items),
                              malformed(genuine), genuine, journal_entries, 1)


def test_spoilt_payment_requests_are_refused_and_the_genuine_one_is_recorded(
    shop: Shop,
) -> None:
    genuine = shop.request("rq-genuine")
    _all_refused_but_the_last(
        shop.ledger, lambda items: merchants.create_payment_requests(shop.ledger, list(items)),
        malformed(genuine), genuine, payment_requests, 1)


def test_spoilt_payments_for_a_request_are_refused(shop: Shop) -> None:
    request = shop.request("rq-paid")
    merchants.create_payment_request(shop.ledger, request)
    genuine = build_payment_for_request(
        shop.customer.key, request["message"], payment_id="pay-for-rq", payer="w-dan",
        sequence=shop.customer.sequence.next(), created_at=shop.ledger.now(),
    )
    _all_refused_but_the_last(shop.ledger, lambda items: settle_batch(shop.ledger, items),
                              malformed(genuine), genuine, journal_entries, 1)


def test_spoilt_codes_and_captures_are_refused_and_the_genuine_pair_settles(
    shop: Shop,
) -> None:
    code, capture = shop.code_and_capture(1)
    spoilt = [CodeCapture(bad, capture) for bad in malformed(code)]
    spoilt += [CodeCapture(code, bad) for bad in malformed(capture)]
    _all_refused_but_the_last(shop.ledger, lambda items: settle_batch(shop.ledger, items),
                              spoilt, CodeCapture(code, capture), journal_entries, 1)


def test_spoilt_refunds_are_refused_and_the_genuine_one_settles(shop: Shop) -> None:
    settle_batch(shop.ledger, [shop.customer.payment("w-tea", yuan(8), "pay-to-refund")])
    genuine = shop.refund("ref-genuine", "pay-to-refund")
    _all_refused_but_the_last(
        shop.ledger, lambda items: settle_batch(shop.ledger, items),
        [MerchantRefund(bad) for bad in malformed(genuine)], MerchantRefund(genuine),
        journal_entries, 1)


def test_spoilt_offline_payments_are_refused_and_the_genuine_one_settles(
    ledger: LedgerContext,
) -> None:
    """Uploaded by the payee's till: the device each one names (a list, an object, text where a
    counter belongs, ...) is read from the unchecked message only to find certificates."""
    world = OfflineLedger(ledger)
    card, till = world.card_and_till("fay", "stall", yuan(50))
    genuine = world.pay(card, till, yuan(5))
    spoilt = malformed(genuine)
    report = world.upload(till, [*spoilt, genuine])
    statuses = [outcome.status for outcome in report.outcomes]
    assert statuses == ["refused"] * len(spoilt) + ["settled"]
    assert world.balance("w-stall") == yuan(5)
    assert run_audit(ledger).ok


def test_a_fraud_case_adds_claimed_amounts_up_to_what_an_account_can_hold(
    ledger: LedgerContext,
) -> None:
    """Forged payments each claiming the largest amount there is: the case opened for them
    names them all, and its total stops at that amount (the database could not hold the sum of
    a thousand of them)."""
    world = OfflineLedger(ledger)
    card, kiosk = world.card_and_till("gus", "kiosk", yuan(50))
    genuine = world.pay(card, kiosk, yuan(5))
    claims = [{**genuine, "message": {**genuine["message"], "amount_fen": AMOUNT_FEN_MAX,
                                      "counter": counter}}
              for counter in (7, 8, 9)]
    report = world.upload(kiosk, [*claims, genuine])
    assert [outcome.status for outcome in report.outcomes] == ["refused"] * 3 + ["settled"]
    (case,) = offline.fraud_cases(ledger)
    assert (case.device_id, case.code) == ("gus-card", "offline_forged")
    assert case.amount_fen == AMOUNT_FEN_MAX
    assert run_audit(ledger).ok


def test_spoilt_unload_statements_are_refused_and_the_genuine_one_is_accepted(
    ledger: LedgerContext,
) -> None:
    world = OfflineLedger(ledger)
    world.wallet("w-ivy")
    card = world.device("ivy-card", "w-ivy")
    world.load(card, yuan(40))
    statement = card.unload(ledger.now())
    entries = _count(ledger, journal_entries)
    for spoilt in malformed(statement):
        with pytest.raises(CbdcError):
            offline.unload_device(ledger, spoilt)
    assert _count(ledger, journal_entries) == entries
    held = world.balance("w-ivy")
    assert offline.unload_device(ledger, statement).returned_fen == yuan(40)
    assert world.balance("w-ivy") == held + yuan(40)
    assert run_audit(ledger).ok
