"""Wallets, tiers, keys, signed payments and merchant flows against a plain in-memory model, on
SQLite and on PostgreSQL.

A Hypothesis state machine opens wallets of classes 1-4 at three operators (one of them a small bank
whose float cannot fund every reverse waterfall), some of them merchants, some with a linked bank
account and the reverse waterfall on; upgrades and downgrades them; authorises sub-wallets (caps at
most the parent's, no nesting) that get keys, money and pay like any wallet, and closes them,
sweeping what they hold back to the parent; closes wallets (only empty ones with no open
sub-wallets; closed is final); enrols and revokes keys; tops up and withdraws; moves the clock
(across Shanghai midnight and new year now and then); and sends signed payments of every kind:
valid, over the single/daily/annual caps, over the payee's balance cap (swept or refused), short of
funds (topped up or refused), by revoked, foreign or unknown keys, replayed as they were, replayed
under a fresh id with a used sequence, forged with another key or altered after signing; payment
requests paid once or too late; payment codes captured once within their expiry and maximum;
refunds, partial and total, never above the original, refused when the merchant lacks the money; and
small batches through ``settle_payments`` (fresh payments, repeats, used sequences, forgeries, two
payers racing for one payment request), each answer compared with what one-by-one settlement would
have answered.

The model predicts every outcome (the exact error code, in the services' documented order of
checks; or the exact plan: what is topped up and swept, and the journal sequence of the entry). It
is written from the rules (README.md's wallet classes) and the services' docstrings, not from
their code: usage is the sum of what was spent per Shanghai calendar day, not a running
counter. After every step:

* every wallet and operator float balance equals the model; no balance is above its class's cap;
  the day's and year's spending equal the model and are within the caps;
* keys (owner, status, last sequence), payment requests (paid or open), captured codes and the
  refunded total of every payment equal the model;
* supply is conserved: ``run_audit`` passes over exactly the entries the model expects and the
  supply report balances;

and every refused operation, replay and forgery leaves every table a refusal must not touch
(balances, chain head, wallets, identities, keys, payments, requests, codes) byte-identical.
Each Hypothesis example runs on a fresh database. The caps are configured small (``LIMITS``) so
that a few steps reach them; every outcome a run met is reported as a Hypothesis ``event``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from cbdc.client import (
    Envelope,
    Message,
    SequenceCounter,
    WalletKey,
    build_capture,
    build_payment,
    build_payment_code,
    build_payment_request,
    build_refund,
    verify_receipt,
)
from cbdc.clock import ManualClock
from cbdc.domain import signing
from cbdc.domain.errors import CbdcError
from cbdc.domain.messages import format_time, parse_time
from cbdc.domain.tiers import NO_LIMITS, Limits, WalletClasses
from cbdc.services import issuance, keys, merchants, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, float_account_code, open_ledger
from cbdc.services.funding import top_up, withdraw
from cbdc.services.payments import (
    Settlement,
    ledger_public_key_hex,
    settle_payment,
    settle_payments,
)
from cbdc.services.reconcile import supply_report
from cbdc.storage.journal import PostedEntry
from cbdc.storage.tables import accounts, payment_codes, payment_requests, payments, wallet_keys
from cbdc.storage.tables import wallets as wallet_rows
from cbdc.storage.wallets import load_wallets
from tests.conftest import START_OF_TESTS
from tests.dbs import DatabaseMaker
from tests.wallet_helpers import evidence_for, snapshot

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROOT_SEED = b"cbdc wallet machine keys".ljust(32, b".")

#: Caps in fen (configuration, as an operator would set them), small so that a few steps reach
#: every one of them: annual caps just above the daily ones, so that two days reach them.
LIMITS = {
    1: Limits(12_000, 5_000, 10_000, 12_000),
    2: Limits(12_000, 5_000, 10_000, None),
    3: Limits(2_000, 500, 1_000, None),
    4: Limits(1_000, 200, 500, 600),
}
WALLET_CLASSES = WalletClasses()
for _number, _limits in LIMITS.items():
    WALLET_CLASSES = WALLET_CLASSES.with_limits(_number, _limits)

#: Floats in fen; BANK-S is a small bank whose float cannot fund every top-up or reverse waterfall.
OPERATOR_FLOATS = {"BANK-A": 400_000, "BANK-B": 400_000, "BANK-S": 3_000}
OPERATORS = tuple(OPERATOR_FLOATS)
WALLETS_MAX = 8
GHOST_WALLET = "w-ghost"
MERCHANT_CATEGORY_CODE = "5812"
NEW_YEARS_EVE = datetime(2026, 12, 31, 20, 0, tzinfo=SHANGHAI)


def shanghai_day(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def phone_of(number: int) -> str:
    return f"+86138{number:08d}"


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    code: str
    #: Why, when one code has several causes (for the run's statistics only).
    cause: str = field(default="", compare=False)


@dataclass(frozen=True)
class Replay:
    """The operation was done before: the service answers ``first`` and changes nothing."""

    first: Any


@dataclass(frozen=True)
class Plan:
    """The operation goes through, topping up and sweeping these amounts."""

    topped_up_fen: int = 0
    swept_fen: int = 0


Outcome = Refusal | Replay | Plan
#: A repeat whose answer is the thing as it is now: checked by the rule, not compared as a whole.
UNCHANGED = object()


@dataclass
class WalletState:
    wallet_id: str
    operator: str
    phone: str
    merchant: bool
    opened_class: int
    opened_reverse_waterfall: bool
    wallet_class: int
    #: The operator holds ``evidence_for(evidence_class)``: class 1 evidence supports every class.
    evidence_class: int
    reverse_waterfall: bool
    status: str = "active"
    balance_fen: int = 0
    spent: dict[date, int] = field(default_factory=dict)
    #: A sub-wallet's parent and own caps (it takes the parent's operator, class and holder).
    parent: str | None = None
    caps: Limits = NO_LIMITS

    @property
    def limits(self) -> Limits:
        return LIMITS[self.wallet_class].tightened(self.caps)

    @property
    def linked(self) -> bool:
        """Classes 1-2 link the bank account the operator holds evidence of; a sub-wallet has
        no bank account of its own."""
        return self.parent is None and self.wallet_class <= 2 and self.evidence_class <= 2

    def spent_day(self, now: datetime) -> int:
        return self.spent.get(shanghai_day(now), 0)

    def spent_year(self, now: datetime) -> int:
        year = shanghai_day(now).year
        return sum(amount for day, amount in self.spent.items() if day.year == year)


@dataclass
class KeyState:
    key: WalletKey
    wallet_id: str | None  # None: never enrolled (a stranger's key)
    status: str = "active"
    last_sequence: int = 0
    counter: SequenceCounter = field(default_factory=SequenceCounter)

    @property
    def public_key(self) -> str:
        return self.key.public_key_hex


@dataclass
class Settled:
    kind: str
    message: Message
    settlement: Settlement
    refunded_fen: int = 0


@dataclass
class RequestState:
    message: Message
    created: merchants.PaymentRequest
    status: str = "open"


@dataclass
class Model:
    wallets: dict[str, WalletState] = field(default_factory=dict)
    keys: dict[str, KeyState] = field(default_factory=dict)
    floats: dict[str, int] = field(default_factory=dict)
    settled: dict[str, Settled] = field(default_factory=dict)
    requests: dict[str, RequestState] = field(default_factory=dict)
    codes: dict[str, Envelope] = field(default_factory=dict)  # signed by payers
    captured: set[str] = field(default_factory=set)
    funding: dict[str, tuple[tuple[str, str, int], PostedEntry]] = field(default_factory=dict)
    last_seq: int = 0

    # -- checks shared by every flow, in the services' order ----------------------------------

    def key_refusal(self, public_key: str, signer: str) -> Refusal | None:
        key = self.keys.get(public_key)
        if key is None or key.wallet_id is None:
            return Refusal("public_key_not_enrolled")
        if key.wallet_id != signer:
            return Refusal("public_key_wallet_mismatch")
        if key.status != "active":
            return Refusal("public_key_revoked")
        return None

    def inactive(self, *wallet_ids: str) -> Refusal | None:
        for wallet_id in wallet_ids:
            if self.wallets[wallet_id].status != "active":
                return Refusal(f"wallet_{self.wallets[wallet_id].status}")
        return None

    def plan(self, payer_id: str, payee_id: str, amount_fen: int, now: datetime, *,
             spending: bool) -> Refusal | Plan:
        """Payer's caps, payee's balance cap (waterfall), funds (reverse waterfall)."""
        payer, payee = self.wallets[payer_id], self.wallets[payee_id]
        if spending:
            caps = payer.limits
            if caps.payment_fen_max is not None and amount_fen > caps.payment_fen_max:
                return Refusal("single_payment_limit_exceeded")
            day_cap, year_cap = caps.daily_outgoing_fen_max, caps.annual_outgoing_fen_max
            if day_cap is not None and payer.spent_day(now) + amount_fen > day_cap:
                return Refusal("daily_limit_exceeded")
            if year_cap is not None and payer.spent_year(now) + amount_fen > year_cap:
                return Refusal("annual_limit_exceeded")
        cap = payee.limits.balance_fen_max
        swept = 0 if cap is None else max(0, payee.balance_fen + amount_fen - cap)
        if swept and not payee.linked:
            return Refusal("balance_limit_exceeded")
        shortfall = max(0, amount_fen - payer.balance_fen)
        # Refunds (the only movement that is not spending here) never reverse-waterfall.
        if shortfall and not (spending and payer.reverse_waterfall):
            return Refusal("insufficient_funds")
        if shortfall > self.floats[payer.operator]:
            return Refusal("insufficient_funds", "the bank cannot fund the reverse waterfall")
        return Plan(topped_up_fen=shortfall, swept_fen=swept)

    def repeat(self, settled_id: str, kind: str, message: Message) -> Replay | Refusal | None:
        first = self.settled.get(settled_id)
        if first is None:
            return None
        if first.kind == kind and first.message == message:
            return Replay(replace(first.settlement, replayed=True))
        return Refusal(f"{kind}_conflict")

    # -- predictions --------------------------------------------------------------------------

    def predict_payment(self, message: Message, now: datetime) -> Outcome:
        payer, payee = message["payer"], message["payee"]
        if payer == payee:
            return Refusal("payee_invalid")
        if payer not in self.wallets or payee not in self.wallets:
            return Refusal("wallet_not_found")
        first = self.repeat(message["payment_id"], "payment", message)
        if first is not None:
            return first
        refusal = self.key_refusal(message["public_key"], payer)
        if refusal is not None:
            return refusal
        if message["sequence"] <= self.keys[message["public_key"]].last_sequence:
            return Refusal("sequence_not_fresh")
        refusal = self.inactive(payer, payee)
        if refusal is not None:
            return refusal
        if "request_id" in message:
            request = self.requests.get(message["request_id"])
            if request is None:
                return Refusal("payment_request_not_found")
            if (request.message["merchant"], request.message["amount_fen"]) != (
                payee, message["amount_fen"]
            ):
                return Refusal("payment_request_mismatch")
            if request.status != "open":
                return Refusal("payment_request_paid")
            if now >= parse_time(request.message["expires_at"]):
                return Refusal("payment_request_expired")
        return self.plan(payer, payee, message["amount_fen"], now, spending=True)

    def predict_request(self, message: Message, now: datetime) -> Outcome:
        merchant = message["merchant"]
        if merchant not in self.wallets:
            return Refusal("wallet_not_found")
        recorded = self.requests.get(message["request_id"])
        if recorded is not None:
            if recorded.message != message:
                return Refusal("payment_request_conflict")
            return Replay(replace(recorded.created, status=recorded.status))
        refusal = self.key_refusal(message["public_key"], merchant) or self.inactive(merchant)
        if refusal is not None:
            return refusal
        if not self.wallets[merchant].merchant:
            return Refusal("not_a_merchant")
        if now >= parse_time(message["expires_at"]):
            return Refusal("payment_request_expired")
        return Plan()

    def predict_capture(self, code: Message, capture: Message, now: datetime) -> Outcome:
        payer, merchant = code["payer"], capture["merchant"]
        if code.get("merchant", merchant) != merchant:
            return Refusal("capture_mismatch")
        if merchant == payer:
            return Refusal("payee_invalid")
        if capture["amount_fen"] > code["max_amount_fen"]:
            return Refusal("payment_code_amount_exceeded")
        if payer not in self.wallets or merchant not in self.wallets:
            return Refusal("wallet_not_found")
        first = self.repeat(capture["capture_id"], "capture", capture)
        if first is not None:
            return first
        if code["code_id"] in self.captured:
            return Refusal("payment_code_used")
        refusal = (
            self.key_refusal(code["public_key"], payer)
            or self.key_refusal(capture["public_key"], merchant)
            or self.inactive(payer, merchant)
        )
        if refusal is not None:
            return refusal
        if not self.wallets[merchant].merchant:
            return Refusal("not_a_merchant")
        if now >= parse_time(code["expires_at"]):
            return Refusal("payment_code_expired")
        return self.plan(payer, merchant, capture["amount_fen"], now, spending=True)

    def predict_refund(self, message: Message, now: datetime) -> Outcome:
        original = self.settled.get(message["payment_id"])
        if original is None:
            return Refusal("payment_not_found")
        if original.kind == "refund":
            return Refusal("refund_invalid")
        customer, merchant = original.settlement.payer, original.settlement.payee
        if merchant != message["merchant"]:
            return Refusal("refund_mismatch")
        first = self.repeat(message["refund_id"], "refund", message)
        if first is not None:
            return first
        refusal = self.key_refusal(message["public_key"], merchant)
        if refusal is not None:
            return refusal
        if message["amount_fen"] > original.settlement.amount_fen - original.refunded_fen:
            return Refusal("refund_exceeds_payment")
        refusal = self.inactive(merchant, customer)
        if refusal is not None:
            return refusal
        return self.plan(merchant, customer, message["amount_fen"], now, spending=False)

    def predict_funding(self, entry_id: str, kind: str, wallet_id: str,
                        amount_fen: int) -> Outcome:
        recorded = self.funding.get(entry_id)
        if recorded is not None:
            if recorded[0] != (kind, wallet_id, amount_fen):
                return Refusal("entry_conflict")
            return Replay(replace(recorded[1], replayed=True))
        wallet = self.wallets[wallet_id]
        refusal = self.inactive(wallet_id)
        if refusal is not None:
            return refusal
        if kind == "withdrawal":
            return Refusal("insufficient_funds") if amount_fen > wallet.balance_fen else Plan()
        cap = wallet.limits.balance_fen_max
        if cap is not None and wallet.balance_fen + amount_fen > cap:
            return Refusal("balance_limit_exceeded")
        if amount_fen > self.floats[wallet.operator]:
            return Refusal("insufficient_funds", "the float cannot fund the top-up")
        return Plan()

    def open_sub_wallets(self, wallet_id: str) -> list[WalletState]:
        return [w for w in self.wallets.values()
                if w.parent == wallet_id and w.status != "closed"]

    def predict_class_change(self, wallet_id: str, target: int, evidence_class: int | None,
                             same_phone: bool, reverse_waterfall: bool | None,
                             now: datetime) -> Outcome:
        """The parent's evidence; then its caps and each open sub-wallet's (its own caps
        within the new class's) against what each holds and has spent."""
        wallet = self.wallets[wallet_id]
        if wallet.parent is not None:
            return Refusal("sub_wallet_class_fixed")
        if wallet.status == "closed":
            return Refusal("wallet_closed")
        if not same_phone:
            return Refusal("identity_evidence_mismatch")
        held = wallet.evidence_class if evidence_class is None else evidence_class
        if held > target:
            return Refusal("identity_evidence_missing")
        for each in (wallet, *self.open_sub_wallets(wallet_id)):
            caps = LIMITS[target].tightened(each.caps)
            if caps.balance_fen_max is not None and each.balance_fen > caps.balance_fen_max:
                return Refusal("class_change_refused")
            day_cap, year_cap = caps.daily_outgoing_fen_max, caps.annual_outgoing_fen_max
            if day_cap is not None and each.spent_day(now) > day_cap:
                return Refusal("class_change_refused")
            if year_cap is not None and each.spent_year(now) > year_cap:
                return Refusal("class_change_refused")
        waterfall = wallet.reverse_waterfall if reverse_waterfall is None else reverse_waterfall
        if waterfall and not (target <= 2 and held <= 2):
            return Refusal("reverse_waterfall_unavailable")
        return Plan()

    def predict_close(self, wallet_id: str) -> Outcome:
        """Closed is final (a repeat answers the wallet as it is); else empty, no open
        sub-wallets."""
        wallet = self.wallets[wallet_id]
        if wallet.status == "closed":
            return Replay(UNCHANGED)
        if self.open_sub_wallets(wallet_id):
            return Refusal("wallet_has_sub_wallets")
        if wallet.balance_fen:
            return Refusal("wallet_not_empty")
        return Plan()

    def predict_sub_wallet(self, parent_id: str, sub_id: str, caps: Limits) -> Outcome:
        """A repeat (same parent and caps) answers the sub-wallet as it is; then the parent
        must be active and no sub-wallet itself; each cap at most the parent's."""
        existing = self.wallets.get(sub_id)
        if existing is not None:
            if (existing.parent, existing.caps) != (parent_id, caps):
                return Refusal("wallet_exists")
            return Replay(UNCHANGED)
        refusal = self.inactive(parent_id)
        if refusal is not None:
            return refusal
        parent = self.wallets[parent_id]
        if parent.parent is not None:
            return Refusal("sub_wallet_nesting")
        for name in ("balance_fen_max", "payment_fen_max", "daily_outgoing_fen_max",
                     "annual_outgoing_fen_max"):
            parent_cap, cap = getattr(parent.limits, name), getattr(caps, name)
            if parent_cap is not None and (cap is None or cap > parent_cap):
                return Refusal("sub_wallet_caps_invalid")
        return Plan()

    def predict_sub_wallet_close(self, parent_id: str, sub_id: str, now: datetime) -> Outcome:
        """The parent takes back what the sub-wallet holds (no spending: only its own balance
        cap counts, swept to the bank if linked); a frozen sub-wallet can be closed, a frozen
        parent cannot take the money."""
        sub = self.wallets[sub_id]
        if sub.parent != parent_id:
            return Refusal("not_a_sub_wallet")
        if sub.status == "closed":
            return Replay(UNCHANGED)
        if not sub.balance_fen:
            return Plan()
        plan = self.plan(sub_id, parent_id, sub.balance_fen, now, spending=False)
        return plan if isinstance(plan, Refusal) else self.inactive(parent_id) or plan

    # -- effects ------------------------------------------------------------------------------

    def move(self, payer_id: str, payee_id: str, amount_fen: int, plan: Plan, now: datetime, *,
             spending: bool) -> None:
        payer, payee = self.wallets[payer_id], self.wallets[payee_id]
        self.floats[payer.operator] -= plan.topped_up_fen
        payer.balance_fen += plan.topped_up_fen - amount_fen
        payee.balance_fen += amount_fen - plan.swept_fen
        self.floats[payee.operator] += plan.swept_fen
        if spending:
            day = shanghai_day(now)
            payer.spent[day] = payer.spent.get(day, 0) + amount_fen
        self.last_seq += 1 + bool(plan.topped_up_fen) + bool(plan.swept_fen)


# --- strategies ----------------------------------------------------------------------------------

picks = st.integers(min_value=0, max_value=255)
rarely = st.sampled_from([False, False, False, False, True])
shares = st.integers(min_value=1, max_value=130)
#: Who signs: mostly the wallet's own active key; sometimes a revoked one, another wallet's, or a
#: key nobody enrolled.
key_choices = st.sampled_from(["own"] * 9 + ["revoked", "other", "stranger"])
AMOUNT_TARGETS = (
    "small", "small", "small", "balance", "over_balance", "single", "over_single", "day_left",
    "over_day", "year_left", "over_year", "payee_room", "over_payee_room",
)


@dataclass(frozen=True)
class PaymentSpec:
    payer: int
    payee: int
    payee_kind: str
    amount: str
    share: int
    key: str
    key_pick: int
    memo: bool


payment_specs = st.builds(
    PaymentSpec,
    payer=picks,
    payee=picks,
    payee_kind=st.sampled_from(["wallet"] * 14 + ["self", "ghost"]),
    amount=st.sampled_from(AMOUNT_TARGETS),
    share=shares,
    key=key_choices,
    key_pick=picks,
    memo=st.booleans(),
)


def altered(message: Message, name: str, other_key: str) -> Message:
    """``message`` with field ``name`` changed to another well-formed value; ``+name=value``
    adds an optional field, ``-name`` drops one."""
    if name.startswith("+"):
        added, value = name[1:].split("=")
        return {**message, added: value}
    if name.startswith("-"):
        return {key: value for key, value in message.items() if key != name[1:]}
    value = message[name]
    if name == "public_key":
        changed: Any = other_key
    elif isinstance(value, int):
        changed = value + 1
    elif name.endswith("_at"):
        changed = format_time(parse_time(value) + timedelta(seconds=1))
    elif name in ("memo", "reference"):
        changed = value + "!"
    else:  # an id
        changed = value[:-1] + ("x" if value[-1] != "x" else "y")
    return {**message, name: changed}


#: Changing these is refused before the signature is checked, so they are not altered here.
CHECKED_BEFORE_THE_SIGNATURE = frozenset({"version", "domain", "currency"})
#: Optional fields added to or dropped from a signed message, per kind.
OPTIONAL_CHANGES = {
    "payment": ["+request_id=q-added", "-memo"],
    "code": ["+merchant=w-0"],
}


#: What goes into a batch: fresh payments, payments of requests (two payers racing for one, now
#: and then), envelopes sent before, a used sequence under a new id, an envelope twice, a forgery.
BATCH_ITEMS = ("fresh",) * 4 + ("request",) * 2 + (
    "again", "same_sequence", "repeat_in_batch", "forged"
)


# --- the machine ---------------------------------------------------------------------------------


class WalletMachine(RuleBasedStateMachine):
    """Set ``maker`` (a DatabaseMaker) on a subclass; each example gets its own database."""

    maker: ClassVar[DatabaseMaker]

    def __init__(self) -> None:
        super().__init__()
        self.url = self.maker.create()
        self.clock = ManualClock(START_OF_TESTS)
        self.ledger: LedgerContext = open_ledger(self.url, clock=self.clock,
                                                 wallet_classes=WALLET_CLASSES)
        self.model = Model()
        self.numbers = itertools.count(1)
        #: Everything sent to the ledger, to send again: (kind, envelopes).
        self.sent: list[tuple[str, tuple[Envelope, ...]]] = []
        #: Sub-wallets closed by their parent: the sweep's entry id and journal sequence.
        self.sweeps: dict[str, tuple[str, int | None]] = {}
        self.stranger = KeyState(WalletKey.derive(ROOT_SEED, "stranger"), None, "unenrolled")
        self.model.keys[self.stranger.public_key] = self.stranger
        for code, float_fen in OPERATOR_FLOATS.items():
            issuance.create_operator(self.ledger, code, f"Bank {code}", quota_fen=float_fen)
            issuance.deposit_reserve(self.ledger, f"{code}-reserve", code, float_fen)
            issuance.issue(self.ledger, f"{code}-issue", code, float_fen)
            self.model.floats[code] = float_fen
            self.model.last_seq += 2

    def teardown(self) -> None:
        self.ledger.dispose()
        self.maker.drop(self.url)

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{next(self.numbers)}"

    def wallet(self, pick: int, *, merchant_first: bool = False) -> str:
        ids = sorted(self.model.wallets)
        if merchant_first:
            merchants_ = [w for w in ids if self.model.wallets[w].merchant]
            ids = merchants_ or ids
        return ids[pick % len(ids)]

    def signing_key(self, wallet_id: str, choice: str, pick: int) -> KeyState:
        """A key to sign for ``wallet_id`` with: see ``key_choices``."""
        enrolled = [k for k in self.model.keys.values() if k.wallet_id is not None]
        own = [k for k in enrolled if k.wallet_id == wallet_id]
        active = [k for k in own if k.status == "active"]
        pool = {
            "own": active or own,
            "revoked": [k for k in own if k.status == "revoked"] or own,
            "other": [k for k in enrolled if k.wallet_id != wallet_id],
            "stranger": [],
        }[choice]
        return pool[pick % len(pool)] if pool else self.stranger

    def run(self, expected: Outcome, action: Callable[[], Any], what: str = "") -> Any:
        """Do ``action``, hold it to ``expected``; a refusal or a replay must change nothing."""
        event(f"{what or 'other'}: {outcome_label(expected)}")
        before = None if isinstance(expected, Plan) else snapshot(self.ledger)
        try:
            result = action()
        except CbdcError as error:
            assert isinstance(expected, Refusal), f"refused ({error}); the model: {expected}"
            assert error.code == expected.code, f"{error}; the model: {expected.code}"
            assert snapshot(self.ledger) == before, f"refused ({error.code}), yet changed"
            return None
        assert not isinstance(expected, Refusal), f"accepted; the model: {expected}: {result}"
        if isinstance(expected, Replay):
            assert expected.first is UNCHANGED or result == expected.first, (
                f"{result} is not the first answer"
            )
            assert snapshot(self.ledger) == before, "a repeat changed the ledger"
        return result

    def check_settlement(self, settlement: Settlement, kind: str, payer: str, payee: str,
                         amount_fen: int, plan: Plan) -> None:
        assert not settlement.replayed
        assert (settlement.kind, settlement.payer, settlement.payee, settlement.amount_fen) == (
            kind, payer, payee, amount_fen
        )
        assert (settlement.topped_up_fen, settlement.swept_fen) == (
            plan.topped_up_fen, plan.swept_fen
        )
        assert settlement.entry_seq == self.model.last_seq + 1 + bool(plan.topped_up_fen)
        receipt = verify_receipt(settlement.receipt, ledger_public_key_hex(self.ledger))
        assert (receipt["kind"], receipt["amount_fen"]) == (kind, amount_fen)

    # -- payments -----------------------------------------------------------------------------

    def amount_for(self, aim: str, share: int, payer_id: str, payee_id: str) -> int:
        """An amount aimed at a cap's edge, the payer's balance or the payee's room. Aiming at
        the daily or annual cap stays within the single-payment cap until one fen over it is
        within reach, so repeated payments walk up to the cap."""
        now = self.now()
        payer = self.model.wallets.get(payer_id)
        payee = self.model.wallets.get(payee_id)
        small = 1 + share * 3
        if payer is None:
            return small
        caps = payer.limits
        single = caps.payment_fen_max or small
        room = None
        if payee is not None and payee.limits.balance_fen_max is not None:
            room = payee.limits.balance_fen_max - payee.balance_fen
        left = (caps.daily_outgoing_fen_max or 0) - payer.spent_day(now)
        if aim in ("year_left", "over_year") and caps.annual_outgoing_fen_max is not None:
            left = min(left, caps.annual_outgoing_fen_max - payer.spent_year(now))
        value = {
            "small": small,
            "balance": payer.balance_fen,
            "over_balance": payer.balance_fen + share,
            "single": single,
            "over_single": single + 1,
            "day_left": min(left, single),
            "over_day": left + 1 if left < single else single,
            "year_left": min(left, single),
            "over_year": left + 1 if left < single else single,
            "payee_room": small if room is None else room,
            "over_payee_room": small if room is None else room + 1,
        }[aim]
        return max(1, value)

    def payment_from(self, spec: PaymentSpec) -> Envelope:
        payer = self.wallet(spec.payer)
        others = [wallet_id for wallet_id in sorted(self.model.wallets) if wallet_id != payer]
        payee = {"self": payer, "ghost": GHOST_WALLET}.get(spec.payee_kind) or others[
            spec.payee % len(others)
        ]
        key = self.signing_key(payer, spec.key, spec.key_pick)
        amount = self.amount_for(spec.amount, spec.share, payer, payee)
        return self.sign_payment(key, payer, payee, amount,
                                 memo=f"order {spec.share}" if spec.memo else None)

    def sign_payment(self, key: KeyState, payer: str, payee: str, amount_fen: int, *,
                     request_id: str | None = None, memo: str | None = None) -> Envelope:
        return build_payment(
            key.key, ledger_id=self.ledger.ledger_id, payment_id=self.fresh("p"), payer=payer,
            payee=payee, amount_fen=amount_fen, sequence=key.counter.next(),
            created_at=self.now(), request_id=request_id, memo=memo,
        )

    def submit_payment(self, envelope: Envelope) -> None:
        self.sent.append(("payment", (envelope,)))
        message = envelope["message"]
        expected = self.model.predict_payment(message, self.now())
        result = self.run(expected, lambda: settle_payment(self.ledger, envelope), "payment")
        if isinstance(expected, Plan):
            self.record_payment(message, expected, result)

    def record_payment(self, message: Message, plan: Plan, settlement: Settlement) -> None:
        payer, payee, amount = message["payer"], message["payee"], message["amount_fen"]
        self.check_settlement(settlement, "payment", payer, payee, amount, plan)
        self.model.move(payer, payee, amount, plan, self.now(), spending=True)
        self.model.keys[message["public_key"]].last_sequence = message["sequence"]
        self.model.settled[message["payment_id"]] = Settled("payment", message, settlement)
        if "request_id" in message:
            self.model.requests[message["request_id"]].status = "paid"

    # -- rules: wallets -----------------------------------------------------------------------

    def open_wallet(self, wallet_class: int, operator: str, merchant: bool,
                    reverse_waterfall: bool) -> None:
        number = len(self.model.wallets)
        wallet_id, phone = f"w-{number}", phone_of(number)
        expected: Outcome = Plan()
        if reverse_waterfall and wallet_class > 2:
            expected = Refusal("reverse_waterfall_unavailable")
        opened = self.run(expected, lambda: wallets.open_wallet(
            self.ledger, wallet_id, operator_code=operator, evidence=evidence_for(wallet_class,
                                                                                  phone),
            zone="shenzhen", wallet_class=wallet_class,
            holder_kind="corporate" if merchant else "personal",
            merchant_category_code=MERCHANT_CATEGORY_CODE if merchant else None,
            reverse_waterfall=reverse_waterfall,
        ))
        if opened is None:
            return
        state = WalletState(wallet_id, operator, phone, merchant, wallet_class, reverse_waterfall,
                            wallet_class, wallet_class, reverse_waterfall)
        assert (opened.wallet_class, opened.balance_fen) == (wallet_class, 0)
        assert (opened.bank_account_ref is not None) == state.linked
        self.model.wallets[wallet_id] = state

    @initialize(
        classes=st.lists(st.integers(min_value=1, max_value=4), min_size=3, max_size=3),
        operators=st.lists(st.sampled_from(OPERATORS), min_size=3, max_size=3),
        shares=st.lists(st.integers(min_value=1, max_value=100), min_size=3, max_size=3),
        new_years_eve=st.booleans(),
    )
    def three_wallets(self, classes: list[int], operators: list[str], shares: list[int],
                      new_years_eve: bool) -> None:
        """A merchant and two customers, each with a key and some money; the merchant and the
    first customer have the reverse waterfall on if their class links a bank account. Half the
    runs start on the evening of 31 December in Shanghai, a few hours before every annual cap
    starts again."""
        if new_years_eve:
            self.clock.set(NEW_YEARS_EVE)
        for index, (wallet_class, operator, share) in enumerate(
            zip(classes, operators, shares, strict=True)
        ):
            self.open_wallet(wallet_class, operator, merchant=index == 0,
                             reverse_waterfall=wallet_class <= 2 and index < 2)
            self.enrol_key(index, new=True, key_pick=0)
            self.fund(index, "top_up", "share", share, again=False)

    @rule(wallet_class=st.integers(min_value=1, max_value=4), operator=st.sampled_from(OPERATORS),
          merchant=st.booleans(), reverse_waterfall=st.booleans(), again=rarely, pick=picks,
          same_holder=st.booleans())
    def open_another_wallet(self, wallet_class: int, operator: str, merchant: bool,
                            reverse_waterfall: bool, again: bool, pick: int,
                            same_holder: bool) -> None:
        """A new wallet, its holder's first key enrolled at once; or an id opened before."""
        count = len(self.model.wallets)
        if again or count >= WALLETS_MAX:
            self.open_again(pick, same_holder)
            return
        self.open_wallet(wallet_class, operator, merchant, reverse_waterfall)
        if len(self.model.wallets) > count:
            self.enrol_key(sorted(self.model.wallets).index(f"w-{count}"), new=True, key_pick=0)

    def open_again(self, pick: int, same_holder: bool) -> None:
        """The same id again: for the same holder, the wallet as it is now; else a conflict."""
        state = self.model.wallets[self.wallet(pick)]
        phone = state.phone if same_holder else phone_of(99)
        # A sub-wallet has no holder evidence of its own: it is never opened again.
        expected = Plan() if same_holder and state.parent is None else Refusal("wallet_exists")
        before = snapshot(self.ledger)
        again = self.run(expected, lambda: wallets.open_wallet(
            self.ledger, state.wallet_id, operator_code=state.operator,
            evidence=evidence_for(state.opened_class, phone), zone="shenzhen",
            wallet_class=state.opened_class,
            holder_kind="corporate" if state.merchant else "personal",
            merchant_category_code=MERCHANT_CATEGORY_CODE if state.merchant else None,
            reverse_waterfall=state.opened_reverse_waterfall,
        ))
        if again is not None:
            assert (again.wallet_class, again.balance_fen, again.status) == (
                state.wallet_class, state.balance_fen, state.status
            )
            assert snapshot(self.ledger) == before

    @rule(
        pick=picks,
        to_class=st.integers(min_value=1, max_value=4),
        evidence=st.sampled_from(["on_record", "for_new_class", "for_new_class", "for_class",
                                  "other_phone"]),
        evidence_class=st.integers(min_value=1, max_value=4),
        reverse_waterfall=st.sampled_from([None, None, True, False]),
    )
    def change_class(self, pick: int, to_class: int, evidence: str, evidence_class: int,
                     reverse_waterfall: bool | None) -> None:
        """Upgrade or downgrade, with new evidence or what the operator holds."""
        state = self.model.wallets[self.wallet(pick)]
        given = {"on_record": None, "for_new_class": to_class, "for_class": evidence_class,
                 "other_phone": to_class}[evidence]
        phone = phone_of(98) if evidence == "other_phone" else state.phone
        expected = self.model.predict_class_change(
            state.wallet_id, to_class, given, evidence != "other_phone", reverse_waterfall,
            self.now(),
        )
        changed = self.run(expected, lambda: wallets.change_class(
            self.ledger, state.wallet_id, to_class,
            evidence=None if given is None else evidence_for(given, phone),
            reverse_waterfall=reverse_waterfall,
        ))
        if changed is None:
            return
        for sub in self.model.open_sub_wallets(state.wallet_id):
            sub.wallet_class = to_class
        state.wallet_class = to_class
        if given is not None:
            state.evidence_class = given
        if reverse_waterfall is not None:
            state.reverse_waterfall = reverse_waterfall
        assert (changed.wallet_class, changed.reverse_waterfall) == (
            to_class, state.reverse_waterfall
        )
        assert (changed.bank_account_ref is not None) == state.linked

    @rule(pick=picks, frozen=rarely)
    def freeze_or_unfreeze(self, pick: int, frozen: bool) -> None:
        state = self.model.wallets[self.wallet(pick)]
        action = wallets.freeze if frozen else wallets.unfreeze
        expected = Refusal("wallet_closed") if state.status == "closed" else Plan()
        result = self.run(expected, lambda: action(self.ledger, state.wallet_id))
        if result is None:
            return
        state.status = "frozen" if frozen else "active"
        assert result.status == state.status

    # -- rules: closing and sub-wallets -------------------------------------------------------

    @rule(pick=picks, empty_first=rarely, a_parent=rarely)
    def close_wallet(self, pick: int, empty_first: bool, a_parent: bool) -> None:
        """A holder closes a wallet (now and then one with sub-wallets), now and then after
        withdrawing what it holds: refused while it holds money or has open sub-wallets; closed
        for good (again: the wallet as it is)."""
        parents = sorted({w.parent for w in self.model.wallets.values()
                          if w.parent and w.status != "closed"})
        wallet_id = parents[pick % len(parents)] if a_parent and parents else self.wallet(pick)
        state = self.model.wallets[wallet_id]
        if empty_first and state.balance_fen and state.status == "active":
            self.move_funds(self.fresh("f"), "withdrawal", state.wallet_id, state.balance_fen)
        expected = self.model.predict_close(state.wallet_id)
        closed = self.run(expected, lambda: wallets.close_wallet(self.ledger, state.wallet_id),
                          "close")
        if closed is None:
            return
        state.status = "closed"
        assert (closed.wallet_id, closed.status, closed.balance_fen) == (
            state.wallet_id, "closed", 0
        )

    @rule(pick=picks, caps=st.lists(st.sampled_from(["same", "lower", "lower"]), min_size=4,
                                    max_size=4),
          loose=st.sampled_from([None, None, None, "none", "over"]), loose_pick=picks,
          share=shares, again=rarely, same=st.booleans(), nested=rarely)
    def authorise_sub_wallet(self, pick: int, caps: list[str], loose: str | None,
                             loose_pick: int, share: int, again: bool, same: bool,
                             nested: bool) -> None:
        """A parent authorises a sub-wallet (a till) with caps each the parent's or lower, now
        and then one of them none or one fen over; it gets a key and some money. Or a
        sub-wallet id again: the same parent and caps answer it as it is, anything else is
        ``wallet_exists``."""
        subs = sorted(w for w, state in self.model.wallets.items() if state.parent)
        if (again or len(self.model.wallets) >= WALLETS_MAX + 3) and subs:
            sub = self.model.wallets[subs[pick % len(subs)]]
            assert sub.parent is not None
            parent_id = sub.parent if same or share % 2 else self.wallet(pick + 1)
            limits = sub.caps if same else replace(sub.caps, balance_fen_max=share)
            self.authorise(parent_id, sub.wallet_id, limits)
            return
        tops = sorted(w for w, state in self.model.wallets.items() if not state.parent)
        parent = self.model.wallets[subs[pick % len(subs)] if nested and subs
                                    else tops[pick % len(tops)]]
        if loose is not None:
            caps[loose_pick % len(caps)] = loose
        limits = Limits(*(
            sub_cap(getattr(parent.limits, name), how, share)
            for name, how in zip(CAP_NAMES, caps, strict=True)
        ))
        sub_id = f"{parent.wallet_id}.s{next(self.numbers)}"
        if self.authorise(parent.wallet_id, sub_id, limits):
            self.enrol_key(sorted(self.model.wallets).index(sub_id), new=True, key_pick=0)
            self.fund(sorted(self.model.wallets).index(sub_id), "top_up", "share", share,
                      again=False)

    def authorise(self, parent_id: str, sub_id: str, caps: Limits) -> bool:
        """Whether a new sub-wallet was authorised."""
        expected = self.model.predict_sub_wallet(parent_id, sub_id, caps)
        sub = self.run(expected, lambda: wallets.authorise_sub_wallet(
            self.ledger, parent_id, sub_id, caps), "sub-wallet")
        if sub is None:
            return False
        parent = self.model.wallets[parent_id]
        state = self.model.wallets.get(sub_id) or WalletState(
            sub_id, parent.operator, parent.phone, parent.merchant, parent.wallet_class, False,
            parent.wallet_class, parent.evidence_class, False, parent=parent_id, caps=caps,
        )
        assert (sub.parent_wallet_id, sub.caps, sub.limits, sub.wallet_class) == (
            parent_id, caps, state.limits, state.wallet_class
        )
        assert (sub.status, sub.balance_fen, sub.bank_account_ref) == (
            state.status, state.balance_fen, None
        )
        assert sub.operator_code == parent.operator
        new = sub_id not in self.model.wallets
        self.model.wallets[sub_id] = state
        return new

    @precondition(lambda self: any(w.parent for w in self.model.wallets.values()))
    @rule(pick=picks, wrong_parent=rarely, again=rarely, fill_parent=rarely)
    def close_sub_wallet(self, pick: int, wrong_parent: bool, again: bool,
                         fill_parent: bool) -> None:
        """The parent closes a sub-wallet (even a frozen one): what it holds goes back to the
        parent in one entry (now and then one topped up to its cap first), swept on to the bank
        above the parent's cap if linked, else refused. Again under
        the same entry id: the sub-wallet as it is and that entry. Another wallet's sub-wallet:
        ``not_a_sub_wallet``."""
        closed = sorted(self.sweeps)
        if again and closed:
            sub_id = closed[pick % len(closed)]
        else:
            subs = sorted(w for w, state in self.model.wallets.items() if state.parent)
            subs = [w for w in subs if self.model.wallets[w].status != "closed"] or subs
            sub_id = subs[pick % len(subs)]
        sub = self.model.wallets[sub_id]
        assert sub.parent is not None
        parent_id = sub.parent
        parent = self.model.wallets[parent_id]
        room = (parent.limits.balance_fen_max or 0) - parent.balance_fen
        if fill_parent and room > 0 and parent.status == "active":
            self.move_funds(self.fresh("f"), "top_up", parent_id, room)
        if wrong_parent:
            others = [w for w in sorted(self.model.wallets) if w not in (sub_id, sub.parent)]
            parent_id = others[pick % len(others)]
        entry_id = self.sweeps[sub_id][0] if sub_id in self.sweeps else self.fresh("sweep")
        expected = self.model.predict_sub_wallet_close(parent_id, sub_id, self.now())
        result = self.run(expected, lambda: wallets.close_sub_wallet(
            self.ledger, entry_id, parent_id, sub_id), "close sub-wallet")
        if result is None:
            return
        assert (result.wallet.wallet_id, result.wallet.status, result.wallet.balance_fen) == (
            sub_id, "closed", 0
        )
        if isinstance(expected, Replay):
            first = self.sweeps.get(sub_id, ("", None))[1]
            assert (None if result.swept is None else result.swept.seq) == first, result.swept
            return
        assert isinstance(expected, Plan)
        if sub.balance_fen:
            assert result.swept is not None
            assert (result.swept.seq, result.swept.kind) == (
                self.model.last_seq + 1, "sub_wallet_sweep"
            )
            self.sweeps[sub_id] = (entry_id, result.swept.seq)
            self.model.move(sub_id, parent_id, sub.balance_fen, expected, self.now(),
                            spending=False)
        else:
            assert result.swept is None
            self.sweeps[sub_id] = (entry_id, None)
        sub.status = "closed"

    # -- rules: keys --------------------------------------------------------------------------

    @rule(pick=picks, new=st.booleans(), key_pick=picks)
    def enrol_key(self, pick: int, new: bool, key_pick: int) -> None:
        """A new key, or one already enrolled (for this wallet: unchanged; else refused)."""
        wallet_id = self.wallet(pick)
        enrolled = [k for k in self.model.keys.values() if k.wallet_id is not None]
        if new or not enrolled:
            key = KeyState(WalletKey.derive(ROOT_SEED, self.fresh("key")), wallet_id)
            expected: Outcome = Plan()
            if self.model.wallets[wallet_id].status == "closed":
                expected = Refusal("wallet_closed")
        else:
            key = enrolled[key_pick % len(enrolled)]
            expected = Replay(None)
            if key.wallet_id != wallet_id:
                expected = Refusal("public_key_exists")
            elif key.status == "revoked":
                expected = Refusal("public_key_revoked")
        before = snapshot(self.ledger)
        try:
            result = keys.enrol_key(self.ledger, wallet_id, key.public_key)
        except CbdcError as error:
            assert isinstance(expected, Refusal) and error.code == expected.code, error
            assert snapshot(self.ledger) == before
            return
        assert not isinstance(expected, Refusal), f"enrolled; the model: {expected}"
        if isinstance(expected, Replay):
            assert snapshot(self.ledger) == before, "enrolling a key again changed the ledger"
        self.model.keys[key.public_key] = key
        assert (result.wallet_id, result.status, result.last_sequence) == (
            wallet_id, "active", key.last_sequence
        )

    @rule(key_pick=picks, stranger=rarely, replaced=st.sampled_from([True, True, True, False]))
    def revoke_key(self, key_pick: int, stranger: bool, replaced: bool) -> None:
        """A lost phone: its key is revoked (again: unchanged), and usually a new one enrolled.
        What it signed before and did not send is refused from now on."""
        enrolled = [k for k in self.model.keys.values() if k.wallet_id is not None]
        if stranger or not enrolled:
            self.run(Refusal("public_key_not_found"),
                     lambda: keys.revoke_key(self.ledger, self.stranger.public_key))
            return
        key = enrolled[key_pick % len(enrolled)]
        key.status = "revoked"
        assert keys.revoke_key(self.ledger, key.public_key).status == "revoked"
        if replaced and key.wallet_id is not None:
            self.enrol_key(sorted(self.model.wallets).index(key.wallet_id), new=True, key_pick=0)

    # -- rules: funding and the clock ---------------------------------------------------------

    @rule(pick=picks, kind=st.sampled_from(["top_up", "top_up", "withdrawal"]),
          aim=st.sampled_from(["share", "share", "room", "over_room", "all", "over_all"]),
          share=shares, again=rarely)
    def fund(self, pick: int, kind: str, aim: str, share: int, again: bool) -> None:
        """Top up from the operator's float or withdraw to it: a share of the room below the
        cap or of the balance, sometimes exactly all of it, sometimes one fen over; or a funding
        entry id used before."""
        if again and self.model.funding:
            self.fund_again(pick, same=share % 2 == 0)
            return
        state = self.model.wallets[self.wallet(pick)]
        room = max(0, (state.limits.balance_fen_max or 0) - state.balance_fen)
        whole = room if kind == "top_up" else state.balance_fen
        amount = max(1, {
            "share": whole * share // 100, "room": room, "over_room": room + 1,
            "all": state.balance_fen, "over_all": state.balance_fen + 1,
        }[aim])
        self.move_funds(self.fresh("f"), kind, state.wallet_id, amount)

    def move_funds(self, entry_id: str, kind: str, wallet_id: str, amount_fen: int) -> None:
        expected = self.model.predict_funding(entry_id, kind, wallet_id, amount_fen)
        service = top_up if kind == "top_up" else withdraw
        posted = self.run(expected, lambda: service(self.ledger, entry_id, wallet_id, amount_fen),
                          kind)
        if not isinstance(expected, Plan):
            return
        assert (posted.seq, posted.kind, posted.replayed) == (self.model.last_seq + 1, kind, False)
        self.model.funding[entry_id] = ((kind, wallet_id, amount_fen), posted)
        state = self.model.wallets[wallet_id]
        sign = 1 if kind == "top_up" else -1
        state.balance_fen += sign * amount_fen
        self.model.floats[state.operator] -= sign * amount_fen
        self.model.last_seq += 1

    def fund_again(self, pick: int, same: bool) -> None:
        """A funding entry id again: the same top-up or withdrawal is its first result (even
        from a wallet frozen since); another amount is a conflict."""
        entry_id = sorted(self.model.funding)[pick % len(self.model.funding)]
        (kind, wallet_id, amount), _ = self.model.funding[entry_id]
        self.move_funds(entry_id, kind, wallet_id, amount if same else amount + 1)

    @rule(how=st.sampled_from(["midnight", "minutes", "seconds", "minutes", "hours", "midnight",
                               "days", "new_year"]),
          amount=st.integers(min_value=0, max_value=1_000))
    def advance_clock(self, how: str, amount: int) -> None:
        """Time moves on, to just before, at, or just after Shanghai midnight now and then."""
        event(f"clock: {how}")
        now = self.now()
        local = now.astimezone(SHANGHAI)
        if how in ("midnight", "new_year"):
            if how == "midnight":
                boundary = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(),
                                            SHANGHAI)
            else:
                boundary = datetime(local.year + 1, 1, 1, tzinfo=SHANGHAI)
            target = boundary + timedelta(seconds=amount % 5 - 2)
            self.clock.set(max(target, now + timedelta(seconds=1)))
            return
        unit = {"seconds": timedelta(seconds=1), "minutes": timedelta(minutes=1),
                "hours": timedelta(hours=1), "days": timedelta(days=1)}[how]
        self.clock.advance(unit * (1 + amount % {"days": 3, "hours": 12}.get(how, 90)))

    # -- rules: payments ----------------------------------------------------------------------

    @rule(spec=payment_specs, count=st.integers(min_value=1, max_value=4))
    def pay(self, spec: PaymentSpec, count: int) -> None:
        """One to four payments alike (a shopping spree walks up to a cap)."""
        for _ in range(count):
            self.submit_payment(self.payment_from(spec))

    @precondition(lambda self: self.sent)
    @rule(pick=picks)
    def send_again(self, pick: int) -> None:
        """Anything sent before, exactly as it was: a settled payment, capture, refund or
        request answers its first result and changes nothing; a refused one is judged anew."""
        kind, envelopes = self.sent[pick % len(self.sent)]
        submit: dict[str, Callable[..., None]] = {
            "payment": self.submit_payment,
            "request": self.submit_request,
            "capture": self.submit_capture,
            "refund": self.submit_refund,
        }
        submit[kind](*envelopes)

    @precondition(lambda self: any(s.kind == "payment" for s in self.model.settled.values()))
    @rule(pick=picks)
    def replay_under_a_new_id(self, pick: int) -> None:
        """A settled payment signed again by its key under a fresh payment id, with the same
        sequence: a replay of the key's sequence, refused."""
        settled = sorted(p for p, s in self.model.settled.items() if s.kind == "payment")
        message = self.model.settled[settled[pick % len(settled)]].message
        key = self.model.keys[message["public_key"]].key
        self.submit_payment(key.seal({**message, "payment_id": self.fresh("p")}))

    @rule(data=st.data(), size=st.integers(min_value=2, max_value=6))
    def settle_a_batch(self, data: st.DataObject, size: int) -> None:
        """A few payments through ``settle_payments`` at once: each answer is what the model says
        one-by-one settlement would have answered, in order."""
        batch: list[tuple[Envelope, bool]] = []
        for _ in range(size):
            kind = data.draw(st.sampled_from(BATCH_ITEMS), label="kind")
            sent = [envelopes[0] for k, envelopes in self.sent if k == "payment"]
            if kind == "again" and sent:
                batch.append((sent[data.draw(picks) % len(sent)], False))
            elif kind == "request":
                # The request an earlier payment of this batch pays, if any: two payers race for
                # one QR code, and the batch must answer the second as one-by-one would. Else a
                # request the merchant shows now.
                pick = data.draw(picks)
                paying = [e["message"]["request_id"] for e, _ in batch
                          if e["message"].get("request_id") in self.model.requests]
                if not paying:
                    merchant = self.wallet(pick, merchant_first=True)
                    paying = [self.fresh("q")]
                    self.submit_request(self.request_envelope(
                        paying[0], merchant, self.signing_key(merchant, "own", 0),
                        1 + pick, 30,
                    ))
                if paying[-1] in self.model.requests:
                    batch.append((self.request_payment(pick, data.draw(picks), "own", 0, "none",
                                                       paying[-1], able_payer=True), False))
            elif kind == "repeat_in_batch" and batch:
                batch.append(batch[data.draw(picks) % len(batch)])
            elif kind == "same_sequence" and (sent or any(not f for _, f in batch)):
                candidates = sent + [e for e, forged in batch if not forged]
                envelope = candidates[data.draw(picks) % len(candidates)]
                key = self.model.keys[envelope["message"]["public_key"]].key
                batch.append((key.seal({**envelope["message"], "payment_id": self.fresh("p")}),
                              False))
            else:
                envelope = self.payment_from(data.draw(payment_specs))
                if kind == "forged":
                    message = {**envelope["message"]}
                    message["amount_fen"] += 1
                    envelope = {"message": message, "signature": envelope["signature"]}
                batch.append((envelope, kind == "forged"))
        before = snapshot(self.ledger)
        results = settle_payments(self.ledger, [envelope for envelope, _ in batch])
        assert len(results) == len(batch)
        changed = False
        for (envelope, forged), result in zip(batch, results, strict=True):
            message = envelope["message"]
            expected = (Refusal("signature_invalid") if forged
                        else self.model.predict_payment(message, self.now()))
            event(f"batch {'request ' * ('request_id' in message)}outcome: "
                  f"{outcome_label(expected)}")
            if isinstance(expected, Refusal):
                assert isinstance(result, CbdcError), f"settled; the model: {expected}"
                assert result.code == expected.code, f"{result}; the model: {expected.code}"
            elif isinstance(expected, Replay):
                assert result == expected.first, f"{result} is not the first answer"
            else:
                assert isinstance(result, Settlement), f"{result}; the model: {expected}"
                self.record_payment(message, expected, result)
                changed = True
            if not forged:
                self.sent.append(("payment", (envelope,)))
        if not changed:
            assert snapshot(self.ledger) == before, "a batch that settled nothing changed"

    # -- rules: forgeries ---------------------------------------------------------------------

    @rule(kind=st.sampled_from(["payment", "request", "code", "capture", "refund"]),
          how=st.sampled_from(["field", "field", "other_key", "signature"]),
          pick=picks, field_pick=picks)
    def forge(self, kind: str, how: str, pick: int, field_pick: int) -> None:
        """A valid envelope of any kind, then signed by another key, altered after signing, or
        with its signature damaged: ``signature_invalid``, and nothing changes."""
        payer = self.wallet(pick)
        merchant = self.wallet(pick + 1, merchant_first=True)
        payer_key = self.signing_key(payer, "own", 0).key
        merchant_key = self.signing_key(merchant, "own", 0).key
        now, ledger_id = self.now(), self.ledger.ledger_id
        code = build_payment_code(
            payer_key, ledger_id=ledger_id, code_id=self.fresh("code"), payer=payer,
            max_amount_fen=100, expires_at=now + timedelta(minutes=5), created_at=now,
        )
        envelopes = {
            "payment": build_payment(
                payer_key, ledger_id=ledger_id, payment_id=self.fresh("p"), payer=payer,
                payee=merchant, amount_fen=10, sequence=10**9, created_at=now, memo="tea",
            ),
            "request": build_payment_request(
                merchant_key, ledger_id=ledger_id, request_id=self.fresh("q"),
                merchant=merchant, amount_fen=10, reference="table 9",
                expires_at=now + timedelta(minutes=5), created_at=now,
            ),
            "code": code,
            "capture": build_capture(
                merchant_key, ledger_id=ledger_id, capture_id=self.fresh("c"),
                code_id=code["message"]["code_id"], merchant=merchant, amount_fen=10,
                created_at=now,
            ),
            "refund": build_refund(
                merchant_key, ledger_id=ledger_id, refund_id=self.fresh("r"),
                payment_id=self.fresh("p"), merchant=merchant, amount_fen=10, created_at=now,
            ),
        }
        envelope = envelopes[kind]
        message = envelope["message"]
        if how == "other_key":
            thief = WalletKey.derive(ROOT_SEED, "thief")
            signature = thief.sign_bytes(signing.signed_bytes(message["domain"], message)).hex()
        elif how == "signature":
            index, original = field_pick % 128, envelope["signature"]
            flipped = format(int(original[index], 16) ^ (1 + field_pick % 15), "x")
            signature = original[:index] + flipped + original[index + 1:]
        else:
            signature = envelope["signature"]
            names = sorted(set(message) - CHECKED_BEFORE_THE_SIGNATURE)
            names += OPTIONAL_CHANGES.get(kind, [])
            message = altered(message, names[field_pick % len(names)],
                              WalletKey.derive(ROOT_SEED, "other").public_key_hex)
        forged: Envelope = {"message": message, "signature": signature}
        action = {
            "payment": lambda: settle_payment(self.ledger, forged),
            "request": lambda: merchants.create_payment_request(self.ledger, forged),
            "code": lambda: merchants.capture_payment_code(self.ledger, forged,
                                                           envelopes["capture"]),
            "capture": lambda: merchants.capture_payment_code(self.ledger, code, forged),
            "refund": lambda: merchants.refund(self.ledger, forged),
        }[kind]
        self.run(Refusal("signature_invalid"), action, f"forged {kind}")

    # -- rules: merchant flows ----------------------------------------------------------------

    @rule(pick=picks, key=key_choices, key_pick=picks, amount=st.integers(1, 1_500),
          minutes=st.integers(min_value=1, max_value=180), stale=rarely, reuse_id=rarely)
    def create_request(self, pick: int, key: str, key_pick: int, amount: int, minutes: int,
                       stale: bool, reuse_id: bool) -> None:
        """A merchant-presented QR: sometimes already expired when it arrives, sometimes under an
        id already used with other content, sometimes from a wallet that is no merchant."""
        request_id = self.fresh("q")
        if reuse_id and self.model.requests:
            request_id = sorted(self.model.requests)[pick % len(self.model.requests)]
        merchant = self.wallet(pick, merchant_first=pick % 4 != 0)
        self.submit_request(self.request_envelope(
            request_id, merchant, self.signing_key(merchant, key, key_pick), amount, minutes,
            stale=stale,
        ))

    def request_envelope(self, request_id: str, merchant: str, signer: KeyState, amount: int,
                         minutes: int, *, stale: bool = False) -> Envelope:
        now = self.now()
        return build_payment_request(
            signer.key, ledger_id=self.ledger.ledger_id, request_id=request_id,
            merchant=merchant, amount_fen=amount, reference=f"table {minutes}",
            expires_at=now if stale else now + timedelta(minutes=minutes),
            created_at=now - timedelta(minutes=minutes) if stale else now,
        )

    def submit_request(self, envelope: Envelope) -> None:
        self.sent.append(("request", (envelope,)))
        message = envelope["message"]
        expected = self.model.predict_request(message, self.now())
        created = self.run(expected,
                           lambda: merchants.create_payment_request(self.ledger, envelope),
                           "request")
        if isinstance(expected, Plan):
            assert (created.status, created.amount_fen, created.envelope) == (
                "open", message["amount_fen"], envelope
            )
            self.model.requests[message["request_id"]] = RequestState(message, created)

    @rule(pick=picks, payer=picks, key=key_choices, key_pick=picks,
          mismatch=st.sampled_from(["none"] * 6 + ["amount", "payee", "unknown"]),
          new_request=st.booleans(), amount=st.integers(1, 300))
    def pay_request(self, pick: int, payer: int, key: str, key_pick: int, mismatch: str,
                    new_request: bool, amount: int) -> None:
        """Pay a request by QR (one recorded earlier, or one the merchant shows now): once, the
        exact amount, to its merchant, in time."""
        if new_request or not self.model.requests:
            merchant = self.wallet(pick, merchant_first=True)
            self.submit_request(self.request_envelope(
                self.fresh("q"), merchant, self.signing_key(merchant, "own", 0), amount,
                1 + pick % 30,
            ))
        if self.model.requests:
            self.submit_payment(self.request_payment(pick, payer, key, key_pick, mismatch))

    def request_payment(self, pick: int, payer: int, key: str, key_pick: int, mismatch: str,
                        request_id: str | None = None, able_payer: bool = False) -> Envelope:
        """A customer's payment for a recorded request (by default, mostly one still open),
        with ``able_payer`` by a customer with the money, if there is one."""
        requests = sorted(self.model.requests)
        requests = [r for r in requests if self.model.requests[r].status == "open"] or requests
        request = self.model.requests[request_id or requests[pick % len(requests)]]
        payee = request.message["merchant"]
        customers = [w for w in sorted(self.model.wallets) if w != payee]
        if able_payer:
            customers = [
                w for w in customers
                if self.model.wallets[w].status == "active"
                and self.model.wallets[w].balance_fen >= request.message["amount_fen"]
            ] or customers
        payer_id = customers[payer % len(customers)]
        if mismatch == "payee":
            payee = self.wallet(payer + 1)
        if mismatch == "unknown":
            request_id = "q-unknown"
        return self.sign_payment(
            self.signing_key(payer_id, key, key_pick), payer_id, payee,
            request.message["amount_fen"] + (mismatch == "amount"),
            request_id=request_id or request.message["request_id"],
        )

    def new_code(self, payer: int, key: str, key_pick: int, max_amount: int, seconds: int,
                 merchant: str | None) -> Envelope:
        """The payer's app shows a one-time code (nothing reaches the ledger yet)."""
        others = [w for w in sorted(self.model.wallets) if w != merchant]
        payer_id = others[payer % len(others)]
        code_id = self.fresh("code")
        code = self.model.codes[code_id] = build_payment_code(
            self.signing_key(payer_id, key, key_pick).key, ledger_id=self.ledger.ledger_id,
            code_id=code_id, payer=payer_id, max_amount_fen=max_amount,
            expires_at=self.now() + timedelta(seconds=seconds), created_at=self.now(),
            merchant=merchant,
        )
        return code

    @rule(pick=picks, merchant=picks, key=key_choices, key_pick=picks, share=shares,
          code_kind=st.sampled_from(["new", "new", "earlier", "earlier", "show_only"]),
          max_amount=st.integers(1, 600),
          seconds=st.integers(min_value=30, max_value=1_800))
    def capture_code(self, pick: int, merchant: int, key: str, key_pick: int, share: int,
                     code_kind: str, max_amount: int, seconds: int) -> None:
        """A merchant captures a scanned code (one shown now, or earlier): up to 130 % of its
        maximum, once, in time. Or a payer shows a code that is captured later, if ever."""
        named = self.wallet(merchant, merchant_first=True) if share % 2 else None
        if code_kind == "show_only":
            self.new_code(pick, key, key_pick, max_amount, seconds, named)
            return
        if code_kind == "new" or not self.model.codes:
            # One odd key at a time: the payer's or the merchant's.
            code = self.new_code(pick, key if pick % 2 else "own", key_pick, max_amount, seconds,
                                 named)
            key = "own" if pick % 2 else key
        else:
            code = self.model.codes[sorted(self.model.codes)[pick % len(self.model.codes)]]
        named = code["message"].get("merchant")
        merchant_id = named if named and merchant % 5 else self.wallet(merchant,
                                                                       merchant_first=True)
        signer = self.signing_key(merchant_id, key, key_pick)
        amount = max(1, code["message"]["max_amount_fen"] * share // 100)
        self.submit_capture(code, build_capture(
            signer.key, ledger_id=self.ledger.ledger_id, capture_id=self.fresh("c"),
            code_id=code["message"]["code_id"], merchant=merchant_id, amount_fen=amount,
            created_at=self.now(),
        ))

    def submit_capture(self, code: Envelope, capture: Envelope) -> None:
        self.sent.append(("capture", (code, capture)))
        message = capture["message"]
        expected = self.model.predict_capture(code["message"], message, self.now())
        settlement = self.run(expected,
                              lambda: merchants.capture_payment_code(self.ledger, code, capture),
                              "capture")
        if not isinstance(expected, Plan):
            return
        payer, merchant, amount = code["message"]["payer"], message["merchant"], message[
            "amount_fen"]
        self.check_settlement(settlement, "capture", payer, merchant, amount, expected)
        self.model.move(payer, merchant, amount, expected, self.now(), spending=True)
        self.model.settled[message["capture_id"]] = Settled("capture", message, settlement)
        self.model.captured.add(code["message"]["code_id"])

    @precondition(lambda self: self.model.settled)
    @rule(pick=picks, share=shares, key=key_choices, key_pick=picks,
          original=st.sampled_from(["paid"] * 6 + ["a_refund", "unknown", "wrong_merchant"]),
          aim=st.sampled_from(["share", "share", "all", "one_over"]), banked_first=rarely)
    def refund(self, pick: int, share: int, key: str, key_pick: int, original: str,
               aim: str, banked_first: bool) -> None:
        """A merchant refunds part or all of what is left of a payment or capture, or one fen
        more; sometimes naming a refund, an unknown payment or the customer as the merchant;
        sometimes after banking all its takings (a refund never draws on the bank account)."""
        settled = sorted(self.model.settled)
        refunds = [p for p in settled if self.model.settled[p].kind == "refund"]
        paid = [p for p in settled if self.model.settled[p].kind != "refund"]
        candidates = refunds if original == "a_refund" and refunds else paid or settled
        payment_id = candidates[pick % len(candidates)]
        first = self.model.settled[payment_id]
        merchant = first.settlement.payee
        if original == "wrong_merchant":
            merchant = first.settlement.payer
        if banked_first and self.model.wallets[merchant].balance_fen:
            self.move_funds(self.fresh("f"), "withdrawal", merchant,
                            self.model.wallets[merchant].balance_fen)
        left = first.settlement.amount_fen - first.refunded_fen
        amount = max(1, {"share": left * share // 100, "all": left, "one_over": left + 1}[aim])
        signer = self.signing_key(merchant, key, key_pick)
        self.submit_refund(build_refund(
            signer.key, ledger_id=self.ledger.ledger_id, refund_id=self.fresh("r"),
            payment_id="p-unknown" if original == "unknown" else payment_id, merchant=merchant,
            amount_fen=amount, created_at=self.now(),
        ))

    def submit_refund(self, envelope: Envelope) -> None:
        self.sent.append(("refund", (envelope,)))
        message = envelope["message"]
        expected = self.model.predict_refund(message, self.now())
        settlement = self.run(expected, lambda: merchants.refund(self.ledger, envelope), "refund")
        if not isinstance(expected, Plan):
            return
        original = self.model.settled[message["payment_id"]]
        merchant, customer = message["merchant"], original.settlement.payer
        amount = message["amount_fen"]
        self.check_settlement(settlement, "refund", merchant, customer, amount, expected)
        self.model.move(merchant, customer, amount, expected, self.now(), spending=False)
        original.refunded_fen += amount
        self.model.settled[message["refund_id"]] = Settled("refund", message, settlement)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def balances_equal_the_model_and_no_cap_is_exceeded(self) -> None:
        now = self.now()
        with self.ledger.read() as connection:
            rows = load_wallets(connection, list(self.model.wallets))
            floats = {
                code: connection.execute(
                    select(accounts.c.balance_fen)
                    .where(accounts.c.code == float_account_code(code))
                ).scalar_one()
                for code in OPERATORS
            }
        assert floats == self.model.floats
        for wallet_id, state in self.model.wallets.items():
            row = rows[wallet_id]
            usage = row.usage.at(now)
            assert (row.balance_fen, row.wallet_class, row.status, row.reverse_waterfall) == (
                state.balance_fen, state.wallet_class, state.status, state.reverse_waterfall
            ), wallet_id
            assert (row.bank_account_ref is not None) == state.linked, wallet_id
            assert (row.parent_wallet_id, row.caps) == (state.parent, state.caps), wallet_id
            assert (usage.spent_day_fen, usage.spent_year_fen) == (
                state.spent_day(now), state.spent_year(now)
            ), wallet_id
            caps = state.limits
            assert 0 <= row.balance_fen <= capped(caps.balance_fen_max), wallet_id
            assert usage.spent_day_fen <= capped(caps.daily_outgoing_fen_max), wallet_id
            assert usage.spent_year_fen <= capped(caps.annual_outgoing_fen_max), wallet_id

    @invariant()
    def keys_requests_codes_and_refunds_equal_the_model(self) -> None:
        with self.ledger.read() as connection:
            stored_keys = {
                row.public_key: (row.wallet_id, row.status, row.last_sequence)
                for row in connection.execute(
                    select(wallet_keys.c.public_key, wallet_rows.c.wallet_id,
                           wallet_keys.c.status, wallet_keys.c.last_sequence)
                    .join(wallet_rows, wallet_rows.c.id == wallet_keys.c.wallet_id)
                )
            }
            stored_requests = {
                row.request_id: row.status
                for row in connection.execute(
                    select(payment_requests.c.request_id, payment_requests.c.status)
                )
            }
            stored_codes = set(connection.execute(select(payment_codes.c.code_id)).scalars())
            stored_payments = {
                row.payment_id: (row.kind, row.amount_fen, row.refunded_fen)
                for row in connection.execute(
                    select(payments.c.payment_id, payments.c.kind, payments.c.amount_fen,
                           payments.c.refunded_fen)
                )
            }
        assert stored_keys == {
            key.public_key: (key.wallet_id, key.status, key.last_sequence)
            for key in self.model.keys.values() if key.wallet_id is not None
        }
        assert stored_requests == {rid: r.status for rid, r in self.model.requests.items()}
        assert stored_codes == self.model.captured
        assert stored_payments == {
            pid: (s.kind, s.settlement.amount_fen, s.refunded_fen if s.kind != "refund" else 0)
            for pid, s in self.model.settled.items()
        }
        assert all(refunded <= amount for _, amount, refunded in stored_payments.values())

    @invariant()
    def supply_is_conserved(self) -> None:
        report = run_audit(self.ledger)
        assert report.ok, [finding.as_dict() for finding in report.findings]
        assert report.entries_checked == self.model.last_seq
        held = sum(self.model.floats.values()) + sum(
            w.balance_fen for w in self.model.wallets.values()
        )
        assert report.ecny_outstanding_fen == report.holdings_fen == held
        assert supply_report(self.ledger).balanced


def outcome_label(outcome: Outcome) -> str:
    """For ``--hypothesis-show-statistics``: which refusals, repeats and plans the runs met."""
    if isinstance(outcome, Refusal):
        return f"{outcome.code} ({outcome.cause})" if outcome.cause else outcome.code
    if isinstance(outcome, Replay):
        return "repeat"
    return f"done{' topped up' if outcome.topped_up_fen else ''}" + (
        " swept" if outcome.swept_fen else ""
    )


def machine_settings() -> settings:
    """The profile's settings with twice its steps: money has to be topped up, spent towards a
    cap over a day or two and refunded before the interesting refusals can happen."""
    assert settings.default is not None  # Optional to mypy, but a profile is always loaded
    return settings(stateful_step_count=2 * settings.default.stateful_step_count)


CAP_NAMES = ("balance_fen_max", "payment_fen_max", "daily_outgoing_fen_max",
             "annual_outgoing_fen_max")


def sub_cap(parent_cap: int | None, how: str, share: int) -> int | None:
    """A sub-wallet's cap: the parent's, a share of it, none, or one fen over it."""
    if parent_cap is None:
        return None if how in ("same", "none") else share * 50
    return {"same": parent_cap, "lower": max(1, parent_cap * share // 130), "none": None,
            "over": parent_cap + 1}[how]


def capped(cap: int | None) -> int:
    """A cap to compare fen with: no cap compares as 2**63, above any BIGINT the ledger stores."""
    return 2**63 if cap is None else cap


def test_wallets_and_payments_match_their_model(database_maker: DatabaseMaker) -> None:
    class Machine(WalletMachine):
        maker = database_maker

    run_state_machine_as_test(Machine, settings=machine_settings())
    assert database_maker.made == [], "every example's database was dropped"
