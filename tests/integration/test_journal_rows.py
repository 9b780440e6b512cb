"""What one batch of entries leaves in the tables, on both engines: each entry's postings in the
order drafted (the audit hashes them in id order), balances moved by every posting, and a chain
the audit accepts."""

from __future__ import annotations

from sqlalchemy import insert, select

from cbdc.domain.postings import EntryDraft, Posting
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.tables import accounts, journal_entries, postings

FUNDED_FEN = 1_000_000


def test_a_batch_keeps_each_entrys_postings_in_order_and_moves_every_balance(
    ledger: LedgerContext,
) -> None:
    with ledger.write() as connection:
        ids = [connection.execute(
            insert(accounts).values(code=f"test:{n}", kind="float", institution_id=1,
                                    balance_fen=0, created_at=ledger.now())
            .returning(accounts.c.id)).scalar_one() for n in range(4)]
        issuance = connection.execute(
            select(accounts.c.id).where(accounts.c.code == "cb:issuance")).scalar_one()
        post_entries(connection, [EntryDraft("funding", "issuance", (
            Posting(issuance, -4 * FUNDED_FEN), *(Posting(i, FUNDED_FEN) for i in ids)))],
            now=ledger.now())
    # Postings drafted against account order; several entries touch the same accounts.
    drafts = [
        EntryDraft(f"batch-{n}", "transfer", (
            Posting(ids[3], -(n + 30)), Posting(ids[0], n + 10), Posting(ids[2], 20),
        ) if n % 2 == 0 else (
            Posting(ids[1], 5 * n), Posting(ids[3], -5 * n),
        ))
        for n in range(50)
    ]
    with ledger.write() as connection:
        posted = post_entries(connection, drafts, now=ledger.now())
    assert all(isinstance(entry, PostedEntry) for entry in posted)

    with ledger.read() as connection:
        stored = connection.execute(
            select(postings.c.entry_seq, postings.c.account_id, postings.c.amount_fen)
            .order_by(postings.c.id)).all()
        balances = dict(connection.execute(
            select(accounts.c.id, accounts.c.balance_fen).where(accounts.c.id.in_(ids))).all())
        entries = connection.execute(
            select(journal_entries.c.seq, journal_entries.c.entry_id, journal_entries.c.kind)
            .where(journal_entries.c.entry_id.like("batch-%"))
            .order_by(journal_entries.c.seq)).all()
    seqs = {entry.entry_id: entry.seq for entry in posted if isinstance(entry, PostedEntry)}
    expected = [(seqs[draft.entry_id], posting.account_id, posting.amount_fen)
                for draft in drafts for posting in draft.postings]
    assert [tuple(row) for row in stored[-len(expected):]] == expected
    assert [(row.entry_id, row.kind) for row in entries] == [
        (draft.entry_id, "transfer") for draft in drafts]
    moved = {account_id: 0 for account_id in ids}
    for draft in drafts:
        for posting in draft.postings:
            moved[posting.account_id] += posting.amount_fen
    assert balances == {account_id: FUNDED_FEN + moved[account_id] for account_id in ids}
    # The audit recomputes each entry's hash from its postings in id order, and each balance
    # from the postings. (Supply is not this test's business: the accounts were funded by a
    # plain issuance entry, not by the issuance services that keep the e-CNY counters.)
    report = run_audit(ledger)
    assert report.entries_checked == 51
    assert [finding.code for finding in report.findings] == ["supply_mismatch"]
