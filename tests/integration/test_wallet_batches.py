"""Opening wallets and funding them in batches answers each item exactly as one by one would.

Twin ledgers start identical (same operators, wallets, keys, and identity salts drawn from the
same seed); one takes a random stream of openings (or of top-ups and withdrawals) one call at a
time, the other in batches of random sizes. Every answer, every row (wallets, identities, keys,
accounts, journal) and the chain head must agree, and both ledgers must pass the audit. Worked
examples follow: a branch onboarding its customers, and a morning of top-ups with an evening
sweep."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, select

from cbdc.client import WalletKey
from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError
from cbdc.domain.money import yuan
from cbdc.domain.tiers import Limits
from cbdc.services import funding, keys, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext, open_ledger
from cbdc.services.funding import Funding
from cbdc.services.wallets import Wallet, WalletOpening
from cbdc.storage.journal import PostedEntry
from cbdc.storage.tables import (
    accounts,
    journal_entries,
    ledger_head,
    postings,
    wallet_identities,
    wallet_keys,
)
from cbdc.storage.tables import wallets as wallet_rows
from tests.conftest import START_OF_TESTS
from tests.dbs import DatabaseMaker
from tests.wallet_helpers import ROOT_SEED, evidence_for, float_balance, funded_operator, snapshot

SALT_SEED = 7
PHONES = ("+8613800000000", "+8613800000001", "+8613800000002")
KEYS = tuple(WalletKey.derive(ROOT_SEED, f"batch-key-{n}").public_key_hex for n in range(4))


def batch_settings(maker: DatabaseMaker) -> settings:
    """The profile's examples on SQLite; a third of them on PostgreSQL, where each example's
    two databases cost about a second to create."""
    assert settings.default is not None  # Optional to mypy, but a profile is always loaded
    examples = settings.default.max_examples
    if maker.engine == "postgresql":
        examples = max(5, examples // 3)
    return settings(settings.default, max_examples=examples)


# -- twin ledgers -----------------------------------------------------------------------------


def _stage(ledger: LedgerContext) -> None:
    """What both twins hold before the stream: two operators (BANK-B with a small float); a
    class-4 wallet with a key and a class-2 wallet whose key was revoked, both 300 CNY below
    their balance caps; a frozen wallet, a closed wallet, a sub-wallet, a wallet at BANK-B."""
    funded_operator(ledger, "BANK-A")
    funded_operator(ledger, "BANK-B", float_yuan=1_000)
    for wallet_id, wallet_class, operator, phone in (
        ("w0", 4, "BANK-A", PHONES[0]), ("w1", 2, "BANK-A", PHONES[1]),
        ("w2", 3, "BANK-A", PHONES[2]), ("w3", 4, "BANK-A", PHONES[0]),
        ("w4", 2, "BANK-B", PHONES[1]),
    ):
        wallets.open_wallet(ledger, wallet_id, operator_code=operator, zone="shenzhen",
                            evidence=evidence_for(wallet_class, phone), wallet_class=wallet_class)
    keys.enrol_key(ledger, "w0", KEYS[0])
    keys.enrol_key(ledger, "w1", KEYS[1])
    keys.revoke_key(ledger, KEYS[1])
    for entry_id, wallet_id, amount_yuan in (("seed-0", "w0", 9_700), ("seed-1", "w1", 499_700),
                                             ("seed-2", "w2", 100), ("seed-4", "w4", 500)):
        funding.top_up(ledger, entry_id, wallet_id, yuan(amount_yuan))
    wallets.freeze(ledger, "w2")
    wallets.close_wallet(ledger, "w3")
    wallets.authorise_sub_wallet(ledger, "w1", "w1-sub",
                                 Limits(yuan(100), yuan(100), yuan(100), None))


@contextmanager
def twin_ledgers(maker: DatabaseMaker) -> Iterator[tuple[LedgerContext, LedgerContext]]:
    urls = [maker.create() for _ in range(2)]
    contexts = [open_ledger(url, clock=ManualClock(START_OF_TESTS)) for url in urls]
    try:
        for context in contexts:
            context.random_bytes = random.Random(SALT_SEED).randbytes
            _stage(context)
        yield contexts[0], contexts[1]
    finally:
        for context, url in zip(contexts, urls, strict=True):
            context.dispose()
            maker.drop(url)


def _natural(connection: Any, table: Table, names: dict[str, dict[int, str]]) -> list[str]:
    """``table``'s rows with surrogate ids replaced by what they stand for (PostgreSQL spends
    sequence values on rolled-back inserts, so ids may differ where content does not)."""
    rows = []
    for row in connection.execute(select(table)).mappings():
        values = {name: value for name, value in row.items() if name != "id"}
        for column, by_id in names.items():
            if column in values:
                values[column] = by_id.get(values[column])
        rows.append(repr(sorted(values.items())))
    return sorted(rows)


def _state(ledger: LedgerContext) -> dict[str, Any]:
    with ledger.read() as connection:
        account_codes = dict(connection.execute(select(accounts.c.id, accounts.c.code)).all())
        wallet_ids = dict(
            connection.execute(select(wallet_rows.c.id, wallet_rows.c.wallet_id)).all()
        )
        by_wallet = {"wallet_id": wallet_ids, "parent_id": wallet_ids,
                     "account_id": account_codes}
        return {
            table.name: _natural(connection, table, by_wallet)
            for table in (accounts, wallet_rows, wallet_identities, wallet_keys,
                          journal_entries, postings, ledger_head)
        }


def _replayed(raw: Sequence[Any]) -> list[Any]:
    """The stream with ``("retry", k)`` replaced by the very request of an earlier item (the k-th
    last, modulo the items so far) and ``("again", k)`` by an earlier movement asked again under
    a new entry id; both are dropped when nothing came before."""
    stream: list[Any] = []
    for position, element in enumerate(raw):
        match element:
            case ("retry", int(k)):
                stream += [stream[-1 - k % len(stream)]] if stream else []
            case ("again", int(k)):
                if stream:
                    kind, item = stream[-1 - k % len(stream)]
                    stream.append((kind, replace(item, entry_id=f"again-{position}")))
            case _:
                stream.append(element)
    return stream


RETRIES = st.tuples(st.just("retry"), st.integers(0, 20))
AGAINS = st.tuples(st.just("again"), st.integers(0, 3))


def _cuts(items: Sequence[Any], sizes: list[int]) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive batches of the given sizes, repeated as needed."""
    position, turn = 0, 0
    while position < len(items):
        size = sizes[turn % len(sizes)]
        yield items[position:position + size]
        position, turn = position + size, turn + 1


# -- openings ---------------------------------------------------------------------------------

openings = st.builds(
    WalletOpening,
    wallet_id=st.sampled_from(("w0", "w1", "w3", "w1-sub", "n0", "n1", "n1", "n2", "bad id")),
    operator_code=st.sampled_from(("BANK-A", "BANK-A", "BANK-B", "BANK-Z")),
    evidence=st.builds(evidence_for, st.sampled_from((1, 2, 3, 4, 4)),
                       st.sampled_from((*PHONES[:2], "12"))),
    zone=st.sampled_from(("shenzhen", "shenzhen", "shenzhen", "no zone")),
    wallet_class=st.sampled_from((1, 2, 3, 4, 4, 4, 9)),
    reverse_waterfall=st.sampled_from((False, False, False, True)),
    public_key_hex=st.sampled_from((None, None, *KEYS, "not a key")),
)


def _open_alone(ledger: LedgerContext, opening: WalletOpening) -> Wallet | str:
    """The reference: open_wallet, then enrol_key, in one unit of work (both or neither)."""
    try:
        with ledger.write():
            wallet = wallets.open_wallet(
                ledger, opening.wallet_id, operator_code=opening.operator_code,
                evidence=opening.evidence, zone=opening.zone, wallet_class=opening.wallet_class,
                reverse_waterfall=opening.reverse_waterfall,
            )
            if opening.public_key_hex is not None:
                keys.enrol_key(ledger, opening.wallet_id, opening.public_key_hex)
    except CbdcError as error:
        return error.code
    return wallet


def _answer(result: Any) -> Any:
    return result.code if isinstance(result, CbdcError) else result


def test_opening_batches_answer_like_one_by_one(database_maker: DatabaseMaker) -> None:
    seen: set[str] = set()

    @batch_settings(database_maker)
    @given(raw=st.lists(st.one_of(openings, RETRIES), min_size=1, max_size=24),
           sizes=st.lists(st.integers(2, 12), min_size=1, max_size=4))
    def check(raw: list[Any], sizes: list[int]) -> None:
        stream: list[WalletOpening] = _replayed(raw)
        with twin_ledgers(database_maker) as (alone, batched):
            one_by_one = [_open_alone(alone, opening) for opening in stream]
            in_batches = [_answer(result) for batch in _cuts(stream, sizes)
                          for result in wallets.open_wallets(batched, batch)]
            assert in_batches == one_by_one
            assert _state(batched) == _state(alone)
            assert run_audit(batched).ok
        seen.update(a if isinstance(a, str) else "opened" for a in one_by_one)

    check()
    assert "opened" in seen and len(seen) >= 6, seen


# -- funding ----------------------------------------------------------------------------------

movements = st.tuples(
    st.sampled_from(("top_up", "top_up", "withdrawal")),
    st.builds(
        Funding,
        entry_id=st.sampled_from(("f0", "f1", "f2", "f3", "f4", "f5", "seed-0", "x" * 129)),
        wallet_id=st.sampled_from(("w0", "w0", "w1", "w1", "w2", "w3", "w4", "nobody")),
        # w0 and w1 have room for 300 CNY: a few of these top-ups fit, one more does not.
        amount_fen=st.sampled_from((1, yuan(50), yuan(100), yuan(150), yuan(200), yuan(2_500),
                                    0)),
    ),
)


def _fund_alone(ledger: LedgerContext, kind: str, item: Funding) -> PostedEntry | str:
    move = funding.top_up if kind == "top_up" else funding.withdraw
    try:
        return move(ledger, item.entry_id, item.wallet_id, item.amount_fen)
    except CbdcError as error:
        return error.code


def _runs(stream: list[tuple[str, Funding]]) -> Iterator[tuple[str, list[Funding]]]:
    """Consecutive movements of one kind: each run goes to top_ups or withdrawals."""
    run: list[Funding] = []
    for position, (kind, item) in enumerate(stream):
        run.append(item)
        if position + 1 == len(stream) or stream[position + 1][0] != kind:
            yield kind, run
            run = []


def test_funding_batches_answer_like_one_by_one(database_maker: DatabaseMaker) -> None:
    seen: set[str] = set()

    @batch_settings(database_maker)
    @given(raw=st.lists(st.one_of(movements, RETRIES, AGAINS), min_size=6, max_size=40),
           sizes=st.lists(st.integers(2, 16), min_size=1, max_size=4))
    def check(raw: list[Any], sizes: list[int]) -> None:
        stream: list[tuple[str, Funding]] = _replayed(raw)
        with twin_ledgers(database_maker) as (alone, batched):
            one_by_one = [_fund_alone(alone, kind, item) for kind, item in stream]
            in_batches = []
            for kind, run in _runs(stream):
                move = funding.top_ups if kind == "top_up" else funding.withdrawals
                for batch in _cuts(run, sizes):
                    in_batches += [_answer(result) for result in move(batched, batch)]
            assert in_batches == one_by_one
            assert _state(batched) == _state(alone)
            assert run_audit(batched).ok
        seen.update(a if isinstance(a, str) else "replayed" if a.replayed else "posted"
                    for a in one_by_one)

    check()
    assert {"posted", "replayed"} <= seen and len(seen) >= 7, seen


# -- worked examples --------------------------------------------------------------------------


def test_a_branch_onboards_its_customers_in_one_batch(ledger: LedgerContext) -> None:
    """BANK-A opens wallets for a morning's queue. Alice comes back (same wallet); Carol presents
    Alice's phone key (refused, and so is her wallet: both or neither); Dave asks at a bank
    that is not an operator; Erin wants class 3 with a phone only."""
    funded_operator(ledger, "BANK-A")
    alice, bob, carol = (WalletKey.derive(ROOT_SEED, name).public_key_hex
                         for name in ("alice", "bob", "carol"))

    def opening(wallet_id: str, wallet_class: int, phone: str, key: str, *,
                evidence_class: int | None = None, operator: str = "BANK-A",
                reverse_waterfall: bool = False) -> WalletOpening:
        evidence = evidence_for(evidence_class or wallet_class, phone)
        return WalletOpening(wallet_id, operator, evidence, "shenzhen", wallet_class,
                             reverse_waterfall=reverse_waterfall, public_key_hex=key)

    results = wallets.open_wallets(ledger, [
        opening("alice", 4, "+8613800000001", alice),
        opening("bob", 2, "+8613800000002", bob, reverse_waterfall=True),
        opening("alice", 4, "+86 138 0000 0001", alice),
        opening("carol", 4, "+8613800000003", alice),
        opening("dave", 4, "+8613800000004", carol, operator="BANK-Q"),
        opening("erin", 3, "+8613800000005", carol, evidence_class=4),
        opening("carol", 4, "+8613800000003", carol),
    ])

    answers = [r.code if isinstance(r, CbdcError) else r.wallet_id for r in results]
    assert answers == ["alice", "bob", "alice", "public_key_exists", "operator_not_found",
                       "identity_evidence_missing", "carol"]
    bob_wallet = results[1]
    assert isinstance(bob_wallet, Wallet)
    assert (bob_wallet.wallet_class, bob_wallet.reverse_waterfall) == (2, True)
    assert bob_wallet.bank_account_ref is not None
    assert results[0] == results[2]
    assert [key.public_key for key in keys.list_keys(ledger, "alice")] == [alice]
    assert [key.public_key for key in keys.list_keys(ledger, "carol")] == [carol]
    with ledger.read() as connection:
        opened = connection.execute(select(wallet_rows.c.wallet_id).order_by(
            wallet_rows.c.wallet_id)).scalars().all()
    assert opened == ["alice", "bob", "carol"]

    # The same batch again answers the same, and writes nothing.
    before = snapshot(ledger)
    again = wallets.open_wallets(ledger, [opening("alice", 4, "+8613800000001", alice),
                                          opening("carol", 4, "+8613800000003", carol)])
    assert again == [results[0], results[6]]
    assert snapshot(ledger) == before


def test_morning_top_ups_and_the_evening_sweep(ledger: LedgerContext) -> None:
    """Three customers top up before the shops open; Alice asks twice and her second top-up would
    take her class-4 wallet over its 10,000 CNY cap; a retry of her first answers with its first
    result. In the evening the merchant sweeps all but 100 CNY of its takings to its bank, and
    a second sweep the same evening finds too little left."""
    funded_operator(ledger, "BANK-A")
    for wallet_id, wallet_class, phone in (("alice", 4, "+8613800000001"),
                                           ("bob", 2, "+8613800000002"),
                                           ("shop", 2, "+8613800000009")):
        wallets.open_wallet(ledger, wallet_id, operator_code="BANK-A", zone="shenzhen",
                            evidence=evidence_for(wallet_class, phone),
                            wallet_class=wallet_class)
    float_before = float_balance(ledger)

    morning = funding.top_ups(ledger, [
        Funding("am-alice-1", "alice", yuan(6_000)),
        Funding("am-bob", "bob", yuan(2_000)),
        Funding("am-alice-2", "alice", yuan(4_500)),
        Funding("am-alice-1", "alice", yuan(6_000)),
        Funding("am-shop", "shop", yuan(1_300)),
    ])

    first, bob, over_cap, retry, shop = morning
    assert isinstance(first, PostedEntry) and isinstance(retry, PostedEntry)
    assert retry == PostedEntry(first.seq, first.entry_id, first.kind, first.created_at,
                                first.entry_hash, replayed=True)
    assert isinstance(over_cap, CbdcError) and over_cap.code == "balance_limit_exceeded"
    assert isinstance(bob, PostedEntry) and isinstance(shop, PostedEntry)
    assert [first.seq, bob.seq, shop.seq] == [first.seq, first.seq + 1, first.seq + 2]
    assert float_balance(ledger) == float_before - yuan(6_000 + 2_000 + 1_300)

    evening = funding.withdrawals(ledger, [
        Funding("pm-sweep-shop", "shop", yuan(1_200)),
        Funding("pm-sweep-shop-2", "shop", yuan(200)),
        Funding("pm-sweep-ghost", "ghost", yuan(1)),
    ])

    assert [r.code if isinstance(r, CbdcError) else r.kind for r in evening] == [
        "withdrawal", "insufficient_funds", "wallet_not_found"]
    assert wallets.get_wallet(ledger, "shop").balance_fen == yuan(100)
    assert wallets.get_wallet(ledger, "alice").balance_fen == yuan(6_000)
    assert float_balance(ledger) == float_before - yuan(6_000 + 2_000 + 100)
    assert run_audit(ledger).ok
