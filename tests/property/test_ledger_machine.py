"""The ledger against a plain in-memory model, on SQLite and on PostgreSQL.

A Hypothesis state machine drives random reserve deposits, issuance, redemption, quota changes,
operator creation and transfers between operator floats, valid and invalid (over quota, over
balance, unknown operator or account, non-holding account, bad amounts, repeated entry ids with
the same and with different content). The model predicts the exact outcome of every command,
including the error code in the services' validation order. After every step it checks that:

* the audit passes (supply conserved, every cached balance equals its postings, every entry
  balanced, the hash chain intact) and has checked exactly the entries the model expects;
* the supply report is balanced and agrees with the model per operator;
* every account balance equals the model, and none but the issuance account is negative;

and a rejected command (or a replay) leaves every balance, counter and the journal unchanged.
Each Hypothesis example runs on a fresh database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import AMOUNT_FEN_MAX
from cbdc.services import issuance
from cbdc.services.audit import run_audit
from cbdc.services.context import (
    ISSUANCE_ACCOUNT_CODE,
    LedgerContext,
    float_account_code,
    open_ledger,
    reserve_account_code,
)
from cbdc.services.reconcile import supply_report
from cbdc.storage.journal import PostedEntry
from cbdc.storage.tables import accounts, institutions, journal_entries, ledger_head, postings
from tests.conftest import START_OF_TESTS
from tests.dbs import DatabaseMaker

OPERATORS = ("BANK-A", "BANK-B", "BANK-C")
GHOST = "GHOST"  # a well-formed operator code that is never created
HOLDING_CODES = [float_account_code(code) for code in (*OPERATORS, GHOST)]
NON_HOLDING_CODES = [reserve_account_code(OPERATORS[0]), ISSUANCE_ACCOUNT_CODE]


@dataclass(frozen=True)
class Call:
    """One money-moving command: ``deposit``/``issue``/``redeem`` name an operator as
    ``source``; ``transfer`` moves from account ``source`` to account ``target``."""

    service: str
    source: str
    amount: Any
    target: str | None = None


@dataclass(frozen=True)
class Refusal:
    code: str


@dataclass(frozen=True)
class Replay:
    seq: int


@dataclass(frozen=True)
class Apply:
    debit: str
    credit: str
    amount_fen: int


def valid_amount(amount: object) -> bool:
    return (
        isinstance(amount, int)
        and not isinstance(amount, bool)
        and 1 <= amount <= AMOUNT_FEN_MAX
    )


@dataclass
class Model:
    """What the ledger should hold: plain dicts, no database."""

    quota: dict[str, int] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    issued: dict[str, int] = field(default_factory=dict)
    redeemed: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=lambda: {ISSUANCE_ACCOUNT_CODE: 0})
    entries: dict[str, tuple[Call, int]] = field(default_factory=dict)
    last_seq: int = 0

    def predict(self, call: Call, entry_id: str) -> Refusal | Replay | Apply:
        """The outcome, checking in the services' order: amount, operator or accounts,
        postings, entry id (replay or conflict), quota, funds."""
        if not valid_amount(call.amount):
            return Refusal("amount_invalid")
        if call.service == "transfer":
            assert call.target is not None
            for code in (call.source, call.target):
                if code not in self.balances:
                    return Refusal("account_not_found")
                if not code.endswith(":float"):
                    return Refusal("account_not_holding")
            if call.source == call.target:
                return Refusal("postings_invalid")
            debit, credit = call.source, call.target
        else:
            if call.source not in self.quota:
                return Refusal("operator_not_found")
            reserve, float_ = reserve_account_code(call.source), float_account_code(call.source)
            debit, credit = {
                "deposit": (ISSUANCE_ACCOUNT_CODE, reserve),
                "issue": (reserve, float_),
                "redeem": (float_, reserve),
            }[call.service]
        if entry_id in self.entries:
            first, seq = self.entries[entry_id]
            return Replay(seq) if first == call else Refusal("entry_conflict")
        if call.service == "issue":
            outstanding = self.issued[call.source] - self.redeemed[call.source]
            if outstanding + call.amount > self.quota[call.source]:
                return Refusal("quota_exceeded")
        if debit != ISSUANCE_ACCOUNT_CODE and self.balances[debit] < call.amount:
            return Refusal("insufficient_funds")
        return Apply(debit, credit, call.amount)

    def apply(self, call: Call, entry_id: str, effect: Apply) -> None:
        self.balances[effect.debit] -= effect.amount_fen
        self.balances[effect.credit] += effect.amount_fen
        if call.service == "issue":
            self.issued[call.source] += effect.amount_fen
        elif call.service == "redeem":
            self.redeemed[call.source] += effect.amount_fen
        self.last_seq += 1
        self.entries[entry_id] = (call, self.last_seq)

    def add_operator(self, code: str, name: str, quota_fen: int) -> None:
        self.quota[code] = quota_fen
        self.names[code] = name
        self.issued[code] = self.redeemed[code] = 0
        self.balances[reserve_account_code(code)] = 0
        self.balances[float_account_code(code)] = 0


#: Weighted towards the operators funded at the start, so most commands can succeed.
WEIGHTED_CODES = (OPERATORS[0],) * 3 + (OPERATORS[1],) * 3 + (OPERATORS[2], GHOST)
operator_codes = st.sampled_from(WEIGHTED_CODES)
small_amounts = st.integers(min_value=1, max_value=3_000)
shares = st.integers(min_value=1, max_value=120)
bad_amounts = st.sampled_from(
    [0, -1, -500, 1.5, 100.0, True, False, "100", None, AMOUNT_FEN_MAX + 1, 2**64]
)
#: Mostly operator floats, sometimes an account that holds no e-CNY (refused).
accounts_for_transfer = st.sampled_from(
    [float_account_code(code) for code in WEIGHTED_CODES * 2] + NON_HOLDING_CODES
)
any_account = st.sampled_from(HOLDING_CODES + NON_HOLDING_CODES)


def calls(amounts: st.SearchStrategy[Any]) -> st.SearchStrategy[Call]:
    return st.one_of(
        st.builds(Call, st.sampled_from(("deposit", "issue", "redeem")), operator_codes, amounts),
        st.builds(Call, st.just("transfer"), any_account, amounts, any_account),
    )


class LedgerMachine(RuleBasedStateMachine):
    """Set ``maker`` (a DatabaseMaker) on a subclass; each example gets its own database."""

    maker: ClassVar[DatabaseMaker]

    def __init__(self) -> None:
        super().__init__()
        self.url = self.maker.create()
        self.clock = ManualClock(START_OF_TESTS)
        self.ledger: LedgerContext = open_ledger(self.url, clock=self.clock)
        self.model = Model()
        self.entry_numbers = itertools.count(1)

    def teardown(self) -> None:
        self.ledger.dispose()
        self.maker.drop(self.url)

    # -- helpers -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything a rejected command must leave byte-identical."""
        with self.ledger.read() as connection:
            return {
                "balances": connection.execute(
                    select(accounts.c.code, accounts.c.balance_fen).order_by(accounts.c.code)
                ).all(),
                "institutions": connection.execute(
                    select(
                        institutions.c.code,
                        institutions.c.name,
                        institutions.c.quota_fen,
                        institutions.c.issued_fen,
                        institutions.c.redeemed_fen,
                    ).order_by(institutions.c.code)
                ).all(),
                "head": connection.execute(select(ledger_head)).all(),
                "entries": connection.execute(select(func.count()).select_from(journal_entries))
                .scalar_one(),
                "postings": connection.execute(select(func.count()).select_from(postings))
                .scalar_one(),
            }

    def run(self, call: Call, entry_id: str) -> PostedEntry:
        if call.service == "transfer":
            return issuance.transfer_between_holdings(
                self.ledger, entry_id, call.source, call.target or "", call.amount
            )
        service = {
            "deposit": issuance.deposit_reserve,
            "issue": issuance.issue,
            "redeem": issuance.redeem,
        }[call.service]
        return service(self.ledger, entry_id, call.source, call.amount)

    def attempt(self, call: Call, entry_id: str) -> None:
        """Run ``call`` and hold it to the model's prediction."""
        self.clock.advance(timedelta(seconds=1))
        expected = self.model.predict(call, entry_id)
        before = self.snapshot()
        try:
            posted = self.run(call, entry_id)
        except CbdcError as error:
            assert isinstance(expected, Refusal), f"{call} {entry_id}: refused {error}"
            assert error.code == expected.code, f"{call}: {error} instead of {expected.code}"
            assert self.snapshot() == before, f"refused {call} changed the ledger"
            return
        assert not isinstance(expected, Refusal), f"{call} {entry_id}: expected {expected}"
        if isinstance(expected, Replay):
            assert posted.replayed
            assert posted.seq == expected.seq
            assert posted.entry_id == entry_id
            assert self.snapshot() == before, f"replayed {call} changed the ledger"
            return
        assert not posted.replayed
        assert posted.seq == self.model.last_seq + 1
        self.model.apply(call, entry_id, expected)

    def share_of(self, account_code: str, share: int) -> int:
        """``share`` percent of what the model says the account holds (at least 1 fen): up to
        120 %, so about one draw in six asks for more than the balance."""
        return max(1, self.model.balances.get(account_code, 0) * share // 100)

    def fresh_entry_id(self) -> str:
        return f"e-{next(self.entry_numbers)}"

    # -- rules -------------------------------------------------------------------------------

    @initialize(
        quotas=st.lists(st.integers(min_value=3_000, max_value=8_000), min_size=2, max_size=2),
        reserves=st.lists(st.integers(min_value=3_000, max_value=10_000), min_size=2, max_size=2),
        issues=st.lists(small_amounts, min_size=2, max_size=2),
    )
    def two_funded_operators(self, quotas: list[int], reserves: list[int],
                             issues: list[int]) -> None:
        """Start most examples with money in play; BANK-C is left for create_operator."""
        for code, quota, reserve, amount in zip(OPERATORS[:2], quotas, reserves, issues,
                                                strict=False):
            self.create_operator(code, quota, other_name=False)
            self.attempt(Call("deposit", code, reserve), self.fresh_entry_id())
            self.attempt(Call("issue", code, amount), self.fresh_entry_id())

    @rule(
        code=st.sampled_from(OPERATORS),
        quota=st.integers(min_value=0, max_value=8_000),
        other_name=st.booleans(),
    )
    def create_operator(self, code: str, quota: int, other_name: bool) -> None:
        name = "Another bank" if other_name else f"{code} Bank"
        before = self.snapshot()
        if code in self.model.quota and name != self.model.names[code]:
            try:
                issuance.create_operator(self.ledger, code, name, quota_fen=quota)
            except CbdcError as error:
                assert error.code == "operator_exists"
                assert self.snapshot() == before
                return
            raise AssertionError("an operator was re-created under another name")
        operator = issuance.create_operator(self.ledger, code, name, quota_fen=quota)
        if code in self.model.quota:
            assert self.snapshot() == before, "re-creating an operator changed the ledger"
        else:
            self.model.add_operator(code, name, quota)
        assert operator.quota_fen == self.model.quota[code]

    @rule(code=operator_codes, quota=st.integers(min_value=0, max_value=8_000))
    def set_quota(self, code: str, quota: int) -> None:
        before = self.snapshot()
        if code not in self.model.quota:
            try:
                issuance.set_quota(self.ledger, code, quota)
            except CbdcError as error:
                assert error.code == "operator_not_found"
                assert self.snapshot() == before
                return
            raise AssertionError(f"set a quota for unknown operator {code}")
        operator = issuance.set_quota(self.ledger, code, quota)
        self.model.quota[code] = quota
        assert operator.quota_fen == quota

    @rule(
        code=operator_codes,
        quota=st.sampled_from([-1, 1.5, 10.0, True, "100", None, AMOUNT_FEN_MAX + 1, 2**63]),
    )
    def set_bad_quota(self, code: str, quota: Any) -> None:
        before = self.snapshot()
        try:
            issuance.set_quota(self.ledger, code, quota)
        except CbdcError as error:
            assert error.code == "amount_invalid"
            assert self.snapshot() == before
            return
        raise AssertionError(f"quota {quota!r} was accepted")

    @rule(code=operator_codes, amount=st.integers(min_value=1, max_value=10_000))
    def deposit_reserve(self, code: str, amount: int) -> None:
        self.attempt(Call("deposit", code, amount), self.fresh_entry_id())

    @rule(code=operator_codes, share=shares)
    def issue(self, code: str, share: int) -> None:
        """A share of the operator's quota headroom, so about one in six is over quota."""
        headroom = self.model.quota.get(code, 0) - self.model.issued.get(code, 0) + (
            self.model.redeemed.get(code, 0)
        )
        amount = max(1, headroom * share // 100)
        self.attempt(Call("issue", code, amount), self.fresh_entry_id())

    @rule(code=operator_codes, share=shares)
    def redeem(self, code: str, share: int) -> None:
        amount = self.share_of(float_account_code(code), share)
        self.attempt(Call("redeem", code, amount), self.fresh_entry_id())

    @rule(source=accounts_for_transfer, destination=accounts_for_transfer, share=shares)
    def transfer(self, source: str, destination: str, share: int) -> None:
        amount = self.share_of(source, share)
        self.attempt(Call("transfer", source, amount, destination), self.fresh_entry_id())

    @rule(
        service=st.sampled_from(("deposit", "issue", "redeem", "transfer")),
        code=operator_codes,
        amount=bad_amounts,
    )
    def bad_amount(self, service: str, code: str, amount: Any) -> None:
        if service == "transfer":
            call = Call(service, float_account_code(code), amount, float_account_code(GHOST))
        else:
            call = Call(service, code, amount)
        self.attempt(call, self.fresh_entry_id())

    @precondition(lambda self: self.model.entries)
    @rule(data=st.data(), same_content=st.booleans())
    def repeat_entry_id(self, data: st.DataObject, same_content: bool) -> None:
        """A recorded entry id again: the same command is a replay, another one a conflict."""
        entry_id = data.draw(st.sampled_from(sorted(self.model.entries)), label="entry_id")
        first, _ = self.model.entries[entry_id]
        call = first
        if not same_content:
            call = data.draw(calls(small_amounts).filter(lambda other: other != first))
        self.attempt(call, entry_id)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def audit_passes(self) -> None:
        report = run_audit(self.ledger)
        assert report.ok, [finding.as_dict() for finding in report.findings]
        assert report.entries_checked == self.model.last_seq
        assert report.accounts_checked == len(self.model.balances)
        issued = sum(self.model.issued.values()) - sum(self.model.redeemed.values())
        assert report.ecny_outstanding_fen == report.holdings_fen == issued

    @invariant()
    def supply_report_is_balanced_and_agrees(self) -> None:
        report = supply_report(self.ledger)
        assert report.balanced
        assert [op.code for op in report.operators] == sorted(self.model.quota)
        for op in report.operators:
            assert op.quota_fen == self.model.quota[op.code]
            assert op.issued_fen == self.model.issued[op.code]
            assert op.redeemed_fen == self.model.redeemed[op.code]
            assert op.reserve_fen == self.model.balances[reserve_account_code(op.code)]
            assert op.float_fen == self.model.balances[float_account_code(op.code)]
        assert report.central_bank_liability_fen == -self.model.balances[ISSUANCE_ACCOUNT_CODE]

    @invariant()
    def balances_equal_the_model_and_none_is_negative(self) -> None:
        with self.ledger.read() as connection:
            rows = connection.execute(
                select(accounts.c.code, accounts.c.kind, accounts.c.balance_fen)
            ).all()
        assert {row.code: row.balance_fen for row in rows} == self.model.balances
        assert all(row.balance_fen >= 0 for row in rows if row.kind != "issuance")

    @invariant()
    def chain_head_is_the_last_entry(self) -> None:
        with self.ledger.read() as connection:
            head = connection.execute(select(ledger_head)).one()
            last = connection.execute(
                select(journal_entries.c.seq, journal_entries.c.entry_hash)
                .order_by(journal_entries.c.seq.desc())
                .limit(1)
            ).first()
        assert head.last_seq == self.model.last_seq
        if last is not None:
            assert (head.last_seq, head.last_hash) == (last.seq, last.entry_hash)


def test_ledger_matches_its_model(database_maker: DatabaseMaker) -> None:
    class Machine(LedgerMachine):
        maker = database_maker

    run_state_machine_as_test(Machine)
    assert database_maker.made == [], "every example's database was dropped"
