"""Batches of payment requests, payments, captures and refunds answer exactly as one by one, in
order.

Two ledgers start identical. One takes a stream of merchant traffic one command at a time
(``create_payment_request``, ``settle_payment``, ``capture_payment_code``, ``refund``); the other
takes the same stream in runs: each run of payment requests in one ``create_payment_requests``
call, each run of payments, captures and refunds in one ``settle_batch`` call, at the same
moments. The streams hold repeats and reused ids (within a run and across runs), expired requests
and codes, unknown wallets, forged signatures, over-cap and under-funded payments, codes captured
twice, customers capturing codes as if they were merchants, and refunds: of settlements made
earlier in the same run, several of one settlement, over what is left, by the wrong merchant, of
refunds, of nothing. Every answer, and every row the two ledgers hold afterwards (balances,
journal, payments, requests, codes), must be the same."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cbdc.client import (
    Envelope,
    SequenceCounter,
    WalletKey,
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_for_request,
    build_payment_request,
    build_refund,
)
from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.services import batches, keys, merchants
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.services.funding import top_up
from cbdc.services.merchants import PaymentRequest
from cbdc.services.payments import (
    CodeCapture,
    MerchantRefund,
    Settlement,
    settle_batch,
    settle_payment,
)
from cbdc.storage.tables import (
    accounts,
    journal_entries,
    ledger_head,
    payment_codes,
    payment_requests,
    payments,
    postings,
    wallet_identities,
    wallet_keys,
    wallets,
)
from tests.conftest import START_OF_TESTS
from tests.dbs import DatabaseMaker
from tests.wallet_helpers import ROOT_SEED, funded_operator, new_wallet

#: Merchants (class 2, corporate), customers of classes 4, 3, 2 (reverse waterfall) and 1 with
#: their opening balances in CNY, and a wallet the ledger never opened.
MERCHANTS = ("m0", "m1")
CUSTOMERS = {"c0": (4, 500), "c1": (3, 1_000), "c2": (2, 300), "c3": (1, 2_000)}
UNKNOWN = "w-nobody"
WALLETS = (*MERCHANTS, *CUSTOMERS, UNKNOWN)
#: Who presents requests and captures codes: mostly merchants, sometimes not.
COLLECTORS = (*MERCHANTS, *MERCHANTS, *MERCHANTS, "c1", UNKNOWN)
#: 2,500 CNY is over class 4's single-payment cap, 6,000 over class 3's.
AMOUNTS = (yuan(1), yuan(1), yuan(50), yuan(50), yuan(400), yuan(2_500), yuan(6_000))

Command = Envelope | CodeCapture | MerchantRefund
Answer = tuple[Any, ...]


def _populate(ledger: LedgerContext) -> None:
    funded_operator(ledger)
    for n, merchant in enumerate(MERCHANTS):
        new_wallet(ledger, merchant, 2, phone=f"+861380000010{n}", holder_kind="corporate",
                   merchant_category_code="5812")
    for n, (customer, (wallet_class, opening_yuan)) in enumerate(CUSTOMERS.items()):
        new_wallet(ledger, customer, wallet_class, phone=f"+861380000020{n}",
                   reverse_waterfall=wallet_class == 2)
        top_up(ledger, f"top-up-{customer}", customer, yuan(opening_yuan))
    for wallet_id in WALLETS[:-1]:
        keys.enrol_key(ledger, wallet_id, WalletKey.derive(ROOT_SEED, wallet_id).public_key_hex)


def _forged(envelope: Envelope) -> Envelope:
    """The same message under a signature with its first hex digit changed."""
    signature = envelope["signature"]
    return {"message": envelope["message"],
            "signature": ("1" if signature[0] == "0" else "0") + signature[1:]}


@dataclass
class _Traffic:
    """Turns abstract steps into signed envelopes, once, for both ledgers: wallets' keys and
    sequences, the simulated time, and what was sent earlier (for repeats and reused ids)."""

    ledger_id: str
    now: datetime = START_OF_TESTS
    count: int = 0
    sequences: dict[str, SequenceCounter] = field(default_factory=dict)
    requests: list[Envelope] = field(default_factory=list)
    sent: list[Command] = field(default_factory=list)

    def key(self, wallet_id: str) -> WalletKey:
        return WalletKey.derive(ROOT_SEED, wallet_id)

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def wallet(self, pick: int, among: Sequence[str] = WALLETS) -> str:
        return among[pick % len(among)]

    def request(self, signer: int, pick: int, amount: int, variant: str) -> Envelope:
        if variant == "again" and self.requests:
            return self.requests[pick % len(self.requests)]
        merchant = self.wallet(signer, COLLECTORS)
        request_id = self.fresh("rq")
        if variant == "clash" and self.requests:
            earlier = self.requests[pick % len(self.requests)]["message"]
            request_id, merchant = earlier["request_id"], earlier["merchant"]
            amount = earlier["amount_fen"] + 1
        created_at, seconds = self.now, {"short": 60, "expired": 0}.get(variant, 300)
        if variant == "expired":  # signed ten minutes ago, expiring now
            created_at = self.now - timedelta(minutes=10)
        envelope = build_payment_request(
            self.key(merchant), ledger_id=self.ledger_id, request_id=request_id,
            merchant=merchant, amount_fen=amount, reference=f"order {request_id}",
            created_at=created_at, expires_at=self.now + timedelta(seconds=seconds),
        )
        self.requests.append(envelope)
        return _forged(envelope) if variant == "forged" else envelope

    def pay(self, payer: int, payee: int, amount: int, variant: str) -> Command:
        if variant == "again" and self.sent:
            return self.sent[payer % len(self.sent)]
        payer_id, payee_id = self.wallet(payer), self.wallet(payee)
        envelope = self.payment(payer_id, payee_id, amount, self.fresh("p"))
        return self.remember(_forged(envelope) if variant == "forged" else envelope)

    def payment(self, payer: str, payee: str, amount: int, payment_id: str,
                **fields: Any) -> Envelope:
        return build_payment(self.key(payer), ledger_id=self.ledger_id, payment_id=payment_id,
                             payer=payer, payee=payee, amount_fen=amount,
                             sequence=self.next_sequence(payer), created_at=self.now, **fields)

    def next_sequence(self, wallet_id: str) -> int:
        return self.sequences.setdefault(wallet_id, SequenceCounter()).next()

    def pay_request(self, payer: int, pick: int, variant: str) -> Command:
        payer_id, payment_id = self.wallet(payer), self.fresh("p")
        if not self.requests:
            return self.remember(self.payment(payer_id, "m0", yuan(1), payment_id,
                                              request_id="rq-unknown"))
        request = _recent(self.requests, pick)["message"]
        if variant == "wrong_amount":
            return self.remember(self.payment(
                payer_id, request["merchant"], request["amount_fen"] + 1, payment_id,
                request_id=request["request_id"]))
        return self.remember(build_payment_for_request(
            self.key(payer_id), request, payment_id=payment_id, payer=payer_id,
            sequence=self.next_sequence(payer_id), created_at=self.now))

    def capture(self, payer: int, merchant: int, amount: int, variant: str) -> Command:
        earlier = payer + merchant  # which earlier command a repeat or reused id takes
        if variant == "again" and self.sent:
            return self.sent[earlier % len(self.sent)]
        payer_id, merchant_id = self.wallet(payer), self.wallet(merchant, COLLECTORS)
        captures = [sent for sent in self.sent if isinstance(sent, CodeCapture)]
        if variant == "code_again" and captures:  # the same merchant captures a code again
            first = _recent(captures, earlier)
            code, merchant_id = first.code, first.capture["message"]["merchant"]
            amount = first.capture["message"]["amount_fen"]
        else:
            code = self.code(payer_id, merchant_id, amount, variant)
        capture_id = self.fresh("cap")
        if variant == "clash" and self.sent:
            capture_id = _settlement_id(self.sent[earlier % len(self.sent)])
        capture = build_capture(
            self.key(merchant_id), ledger_id=self.ledger_id, capture_id=capture_id,
            code_id=code["message"]["code_id"], merchant=merchant_id,
            amount_fen=amount + (variant == "over_max"), created_at=self.now,
        )
        code = _forged(code) if variant == "forged_code" else code
        capture = _forged(capture) if variant == "forged_capture" else capture
        return self.remember(CodeCapture(code, capture))

    def code(self, payer: str, merchant: str, amount: int, variant: str) -> Envelope:
        named = {"named": merchant, "other_merchant": "m1" if merchant != "m1" else "m0"}
        code = build_payment_code(
            self.key(payer), ledger_id=self.ledger_id, code_id=self.fresh("code"), payer=payer,
            max_amount_fen=amount, created_at=self.now, merchant=named.get(variant),
            expires_at=self.now + timedelta(seconds=30 if variant == "short" else 300),
        )
        return code

    def refund(self, pick: int, which: int, amount: int, variant: str) -> Command:
        refunds = [sent for sent in self.sent if isinstance(sent, MerchantRefund)]
        if variant in ("again", "of_refund") and refunds:
            earlier = _recent(refunds, pick)
            if variant == "again":
                return self.remember(earlier)
            # a refund of a refund: refund_invalid whoever signs it (if the first settled)
            original_id, merchant = earlier.envelope["message"]["refund_id"], "m0"
        else:
            settled = [sent for sent in self.sent if not isinstance(sent, MerchantRefund)]
            if not settled or variant == "unknown":
                original_id, merchant, paid = "p-nobody", "m0", yuan(1)
            else:
                original = _recent(settled, which)
                original_id, merchant = _settlement_id(original), _payee(original)
                paid = _amount(original)
            amount = {"half": max(1, paid // 2), "full": paid, "over": paid + 1}.get(
                variant, amount)
        if variant == "wrong_merchant":
            merchant = "m1" if merchant != "m1" else "m0"
        refund_id = self.fresh("ref")
        if variant == "clash" and refunds:  # an earlier refund's id, for one fen more
            earlier_message = _recent(refunds, pick).envelope["message"]
            refund_id, original_id = earlier_message["refund_id"], earlier_message["payment_id"]
            merchant, amount = earlier_message["merchant"], earlier_message["amount_fen"] + 1
        envelope = build_refund(self.key(merchant), ledger_id=self.ledger_id,
                                refund_id=refund_id, payment_id=original_id, merchant=merchant,
                                amount_fen=amount, created_at=self.now)
        return self.remember(MerchantRefund(_forged(envelope) if variant == "forged"
                                            else envelope))

    def remember(self, command: Command) -> Command:
        self.sent.append(command)
        return command


def _recent(sent: Sequence[Any], pick: int) -> Any:
    """One of the last few sent: repeats of recent traffic meet paid requests, used codes."""
    return sent[-1 - pick % min(3, len(sent))]


def _settlement_id(command: Command) -> str:
    if isinstance(command, CodeCapture):
        return str(command.capture["message"]["capture_id"])
    if isinstance(command, MerchantRefund):
        return str(command.envelope["message"]["refund_id"])
    return str(command["message"]["payment_id"])


def _payee(command: Envelope | CodeCapture) -> str:
    """Who received a payment or capture: the one who may refund it."""
    if isinstance(command, CodeCapture):
        return str(command.capture["message"]["merchant"])
    return str(command["message"]["payee"])


def _amount(command: Envelope | CodeCapture) -> int:
    message = command.capture["message"] if isinstance(command, CodeCapture) else command["message"]
    return int(message["amount_fen"])


# Steps: (what, pick, pick, amount, variant); picks choose wallets and earlier commands.
REQUEST_VARIANTS = ("fresh", "fresh", "fresh", "short", "expired", "again", "clash", "forged")
PAY_VARIANTS = ("fresh", "fresh", "again", "forged")
PAY_REQUEST_VARIANTS = ("exact", "exact", "exact", "wrong_amount")
CAPTURE_VARIANTS = ("fresh", "fresh", "fresh", "named", "other_merchant", "over_max", "short",
                    "code_again", "again", "clash", "forged_code", "forged_capture")
REFUND_VARIANTS = ("half", "half", "half", "full", "over", "again", "clash", "clash",
                   "wrong_merchant", "wrong_merchant", "of_refund", "unknown", "forged")
#: Seconds the clock moves before each run: requests and codes live 300 s, short ones 30-60 s.
ADVANCES = (0, 0, 20, 90, 400)

Step = tuple[str, int, int, int, str]
Run = tuple[int, str, list[Step]]

_picks = st.integers(0, 63)
_amounts = st.sampled_from(AMOUNTS)
_request_steps = st.tuples(st.just("request"), _picks, _picks, _amounts,
                           st.sampled_from(REQUEST_VARIANTS))
_settlement_steps = st.one_of(
    st.tuples(st.just("pay"), _picks, _picks, _amounts, st.sampled_from(PAY_VARIANTS)),
    st.tuples(st.just("pay_request"), _picks, _picks, _amounts,
              st.sampled_from(PAY_REQUEST_VARIANTS)),
    st.tuples(st.just("capture"), _picks, _picks, _amounts, st.sampled_from(CAPTURE_VARIANTS)),
    st.tuples(st.just("refund"), _picks, _picks, _amounts, st.sampled_from(REFUND_VARIANTS)),
)
_runs = st.one_of(
    st.tuples(st.sampled_from(ADVANCES), st.just("requests"),
              st.lists(_request_steps, min_size=1, max_size=8)),
    st.tuples(st.sampled_from(ADVANCES), st.just("settlements"),
              st.lists(_settlement_steps, min_size=1, max_size=16)),
)


def _command(traffic: _Traffic, step: Step) -> Command:
    what, first, second, amount, variant = step
    if what == "request":
        return traffic.request(first, second, amount, variant)
    if what == "pay":
        return traffic.pay(first, second, amount, variant)
    if what == "pay_request":
        return traffic.pay_request(first, second, variant)
    if what == "refund":
        return traffic.refund(first, second, amount, variant)
    return traffic.capture(first, second, amount, variant)


def _answer(result: PaymentRequest | Settlement | CbdcError) -> Answer:
    if isinstance(result, CbdcError):
        return ("refused", result.code)
    if isinstance(result, PaymentRequest):
        return ("request", result.request_id, result.merchant, result.amount_fen, result.status,
                result.expires_at, result.envelope)
    return ("settled", result.kind, result.payment_id, result.amount_fen, result.topped_up_fen,
            result.swept_fen, result.replayed, result.receipt)


def _alone(ledger: LedgerContext, command: Command, requests: bool) -> Answer:
    try:
        if requests:
            assert not isinstance(command, CodeCapture | MerchantRefund)
            return _answer(merchants.create_payment_request(ledger, command))
        if isinstance(command, CodeCapture):
            return _answer(merchants.capture_payment_code(ledger, command.code, command.capture))
        if isinstance(command, MerchantRefund):
            return _answer(merchants.refund(ledger, command.envelope))
        return _answer(settle_payment(ledger, command))
    except CbdcError as error:
        return _answer(error)


def _batched(ledger: LedgerContext, commands: Sequence[Command], requests: bool) -> list[Answer]:
    if requests:
        envelopes = [c for c in commands if not isinstance(c, CodeCapture | MerchantRefund)]
        assert len(envelopes) == len(commands)
        return [_answer(r) for r in merchants.create_payment_requests(ledger, envelopes)]
    return [_answer(r) for r in settle_batch(ledger, commands)]


def _rows(ledger: LedgerContext) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the traffic may have changed (and those it may not have)."""
    tables = (accounts, journal_entries, postings, ledger_head, wallets, wallet_identities,
              wallet_keys, payments, payment_requests, payment_codes)
    with ledger.read() as connection:
        return {
            table.name: [tuple(row) for row in connection.execute(
                select(table).order_by(*table.primary_key.columns))]
            for table in tables
        }


def _run_twins(maker: DatabaseMaker, runs: Sequence[Run],
               check: Callable[[list[Answer]], None] = lambda answers: None) -> None:
    """Send ``runs`` one by one to one ledger and in batches to its twin; compare everything."""
    urls = [maker.create(), maker.create()]
    alone, batched = (open_ledger(url, clock=ManualClock(START_OF_TESTS)) for url in urls)
    for ledger in (alone, batched):  # the same identity salts on both sides
        ledger.random_bytes = random.Random(0).randbytes
    try:
        _populate(alone)
        _populate(batched)
        traffic = _Traffic(alone.ledger_id)
        answers_alone: list[Answer] = []
        answers_batched: list[Answer] = []
        for advance, kind, steps in runs:
            traffic.now += timedelta(seconds=advance)
            for ledger in (alone, batched):
                ledger.clock.set(traffic.now)  # type: ignore[attr-defined]
            commands = [_command(traffic, step) for step in steps]
            requests = kind == "requests"
            answers_alone += [_alone(alone, command, requests) for command in commands]
            # Nothing races here, so a batch that falls back to one by one (as after a lost
            # race) met a database constraint its own running state should have foreseen.
            with mock.patch.object(batches, "_alone", side_effect=AssertionError(
                    "the batch fell back to one by one")):
                answers_batched += _batched(batched, commands, requests)
        assert answers_batched == answers_alone
        assert _rows(batched) == _rows(alone)
        assert run_audit(alone).ok and run_audit(batched).ok
        check(answers_alone)
    finally:
        for ledger in (alone, batched):
            ledger.dispose()
        for url in urls:
            maker.drop(url)


@given(runs=st.lists(_runs, min_size=1, max_size=6))
def test_batches_of_requests_payments_and_captures_answer_like_one_by_one(
    database_maker: DatabaseMaker, runs: list[Run]
) -> None:
    _run_twins(database_maker, runs)


def _random_runs(pick: random.Random, count: int) -> list[Run]:
    runs: list[Run] = []
    for _ in range(count):
        if pick.random() < 0.3:
            steps = [("request", pick.randrange(64), pick.randrange(64), pick.choice(AMOUNTS),
                      pick.choice(REQUEST_VARIANTS)) for _ in range(pick.randint(1, 8))]
            runs.append((pick.choice(ADVANCES), "requests", steps))
            continue
        settlement_steps: list[Step] = []
        for _ in range(pick.randint(1, 30)):
            what = pick.choice(("pay", "pay_request", "capture", "capture", "refund"))
            variants = {"pay": PAY_VARIANTS, "pay_request": PAY_REQUEST_VARIANTS,
                        "capture": CAPTURE_VARIANTS, "refund": REFUND_VARIANTS}[what]
            settlement_steps.append((what, pick.randrange(64), pick.randrange(64),
                                     pick.choice(AMOUNTS), pick.choice(variants)))
        runs.append((pick.choice(ADVANCES), "settlements", settlement_steps))
    return runs


def test_long_streams_meet_every_refusal_and_still_agree(database_maker: DatabaseMaker) -> None:
    """Longer streams than Hypothesis draws, checked to reach every answer the property is
    about (so the property above is not passing on easy streams only)."""

    def every_refusal_met(answers: list[Answer]) -> None:
        codes = {answer[1] for answer in answers if answer[0] == "refused"}
        assert {
            "wallet_not_found", "not_a_merchant", "signature_invalid", "payee_invalid",
            "payment_request_conflict", "payment_request_expired", "payment_request_paid",
            "payment_request_mismatch", "payment_code_used", "payment_code_expired",
            "payment_code_amount_exceeded", "capture_mismatch", "capture_conflict",
            "single_payment_limit_exceeded", "insufficient_funds", "payment_not_found",
            "refund_invalid", "refund_mismatch", "refund_exceeds_payment", "refund_conflict",
        } <= codes, codes
        replayed = {answer[1] for answer in answers if answer[0] == "settled" and answer[6]}
        assert replayed == {"payment", "capture", "refund"}
        assert any(answer[:2] == ("settled", "refund") and not answer[6] for answer in answers)
        assert any(answer[0] == "request" for answer in answers)

    _run_twins(database_maker, _random_runs(random.Random(7), 160), every_refusal_met)
