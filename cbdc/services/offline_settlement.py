"""Settling offline payments: one pass over every payment the ledger holds from some devices.

A :class:`SettlementRun` works inside the caller's unit of work, on payer devices whose rows the
caller has locked. Its phases, in this order (so locks are taken devices -> wallets -> head):

1. :meth:`~SettlementRun.load`: the devices' stored payments, loads, unloads, what was already
   settled, the revocations, and the payee devices;
2. :meth:`~SettlementRun.lock_wallets`: every payee wallet (and any the caller adds), locked in
   ascending id order;
3. :meth:`~SettlementRun.decide`: classify each device's payments
   (:func:`cbdc.offline.classify_device_payments`), open or update a fraud case per finding,
   revoke the device for any finding that proves tampering, then decide each unpaid payment;
4. :meth:`~SettlementRun.drafts` then :meth:`~SettlementRun.write`: the journal entries (posted
   by the caller with ``post_entries``), and the rows that record them.

Who pays (docs/offline-protocol.md, "Settlement as implemented"):

* an **honest** payment (no finding) is paid from the payer device's escrow; should the escrow
  have been drained by payments settled before they were known to be fraudulent, the
  certifying operator pays it (``operator_loss``);
* a flagged payment is paid only if the payee device could have accepted it: the rules of
  section 6 at the payment's ``created_at`` against the revocation list the ledger handed the
  payee device at its last sync (so a payee whose list predated the revocation is still paid);
  a double-spent or revoked-only payment from the escrow while it has room and its counter has
  not been paid from it, otherwise by the operator; payments after an unload or beyond the
  loads by the operator. The operator pays flagged payments of one device up to that device's
  offline balance cap in total (``offline_loss_cap_reached`` beyond it);
* the payee's balance cap applies: the excess is swept to its linked bank account (waterfall)
  where it has one; otherwise the payment stays **pending** (``balance_limit_exceeded``), its
  value held in the escrow (honest payments keep their share reserved), until a later upload
  finds room. A frozen or closed payee wallet also leaves it pending.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from cbdc.domain.errors import CbdcError, CertificateRefused, OfflineRefused
from cbdc.domain.money import AMOUNT_FEN_MAX
from cbdc.domain.postings import EntryDraft, Posting, transfer
from cbdc.domain.settlement import Party, TransferPlan, plan_transfer
from cbdc.offline import (
    Classification,
    DeviceCertificate,
    Finding,
    FindingCode,
    OperatorCertificate,
    VerifiedPayment,
    classify_device_payments,
)
from cbdc.offline.messages import parse_time
from cbdc.offline.verification import check_payment_acceptable
from cbdc.services.context import LedgerContext
from cbdc.services.offline_keys import issued_certificate, operator_authority, root_public_key
from cbdc.services.wallets import check_active, party
from cbdc.storage.journal import PostedEntry
from cbdc.storage.offline import (
    DeviceRow,
    Revocations,
    StoredPayment,
    load_messages,
    load_revocations,
    payee_devices,
    stored_payments,
    unload_messages,
)
from cbdc.storage.tables import (
    accounts,
    offline_devices,
    offline_fraud_cases,
    offline_operator_losses,
    offline_payments,
    offline_revocations,
    offline_settlements,
)
from cbdc.storage.wallets import WalletRow, load_wallets

#: Findings that prove the device was tampered with or cloned: the device is revoked.
REVOKING_CODES = frozenset({
    FindingCode.DOUBLE_SPEND, FindingCode.AFTER_UNLOAD, FindingCode.OVERSPEND,
    FindingCode.CAP_EXCEEDED, FindingCode.CERTIFICATE_EXPIRED,
})
#: Flags under which the escrow still pays first (the device's own loaded value).
ESCROW_PAYS_FLAGS = frozenset({FindingCode.DOUBLE_SPEND, FindingCode.CERTIFICATE_REVOKED})


@dataclass
class DeviceBook:
    """One payer device's running state during a run."""

    row: DeviceRow
    certificate: DeviceCertificate
    operator_certificate: OperatorCertificate
    payments: list[StoredPayment]
    loads: list[dict[str, Any]]
    unloads: list[dict[str, Any]]
    escrow_counters: set[int]
    flagged_loss_fen: int
    settled_fen: int
    unloaded_fen: int
    operator_paid_fen: int
    reserved_fen: int = 0
    revoke_reason: str | None = None
    revocation_written: bool = False
    classification: Classification | None = None

    @property
    def room_fen(self) -> int:
        return self.row.loaded_fen - self.settled_fen - self.unloaded_fen - self.reserved_fen


@dataclass(frozen=True, slots=True)
class Payout:
    """A decision to pay one stored payment, from ``source`` (``escrow`` or ``operator``)."""

    book: DeviceBook
    payment: StoredPayment
    source: str
    payee: WalletRow
    plan: TransferPlan
    codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FraudCaseView:
    """A fraud case as the services report it."""

    device_id: str
    wallet_id: str
    operator_code: str
    code: str
    counters: tuple[int, ...]
    payment_hashes: tuple[str, ...]
    amount_fen: int
    detail: str
    opened_at: datetime
    updated_at: datetime


@dataclass
class SettlementRun:
    context: LedgerContext
    connection: Connection
    devices: dict[str, DeviceRow]
    now: datetime
    books: dict[str, DeviceBook] = field(default_factory=dict)
    revocations: Revocations | None = None
    payees: dict[str, tuple[str, int]] = field(default_factory=dict)
    wallets: dict[str, WalletRow] = field(default_factory=dict)
    floats: dict[int, int] = field(default_factory=dict)
    payouts: list[Payout] = field(default_factory=list)
    statuses: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    cases: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    _entries: dict[str, str] = field(default_factory=dict)
    # Each payee's limits and usage at ``now`` (a run moves only balances), by wallet id.
    _parties: dict[str, tuple[tuple[Any, ...], Party]] = field(default_factory=dict)

    # --- 1. load ---------------------------------------------------------------------------

    def load(self, known: Mapping[str, tuple[dict[str, Any], bytes]] | None = None) -> None:
        """``known``: messages and signatures the caller holds, by payment hash (not re-read)."""
        rows = list(self.devices.values())
        ids = [row.id for row in rows]
        by_device: dict[int, list[StoredPayment]] = {row_id: [] for row_id in ids}
        for payment in stored_payments(self.connection, ids, known):
            by_device[payment.payer_device_id].append(payment)
        loads = load_messages(self.connection, ids)
        unloads = unload_messages(self.connection, ids)
        counters = self._escrow_counters(ids)
        losses = self._flagged_losses(ids)
        for row in rows:
            authority = operator_authority(self.context, row.operator_code,
                                           row.operator_registered_at)
            self.books[row.device_id] = DeviceBook(
                row=row,
                certificate=issued_certificate(row.certificate_json)[1],
                operator_certificate=authority.certificate,
                payments=by_device[row.id],
                loads=loads[row.id],
                unloads=unloads[row.id],
                escrow_counters=counters.get(row.id, set()),
                flagged_loss_fen=losses.get(row.id, 0),
                settled_fen=row.settled_fen,
                unloaded_fen=row.unloaded_fen,
                operator_paid_fen=row.operator_paid_fen,
            )
        self.revocations = load_revocations(self.connection)
        self.payees = payee_devices(
            self.connection,
            {p.payee_device for book in self.books.values() for p in book.payments
             if p.status == "pending"},
        )
        self.cases = self._existing_cases(ids)

    def _escrow_counters(self, device_row_ids: list[int]) -> dict[int, set[int]]:
        result: dict[int, set[int]] = {}
        for row in self.connection.execute(
            select(offline_settlements.c.payer_device_id, offline_settlements.c.counter)
            .where(offline_settlements.c.payer_device_id.in_(device_row_ids))
        ):
            result.setdefault(row.payer_device_id, set()).add(int(row.counter))
        return result

    def _flagged_losses(self, device_row_ids: list[int]) -> dict[int, int]:
        result: dict[int, int] = {}
        for row in self.connection.execute(
            select(offline_operator_losses.c.device_id, offline_operator_losses.c.amount_fen)
            .where(offline_operator_losses.c.device_id.in_(device_row_ids),
                   offline_operator_losses.c.codes != "")
        ):
            result[row.device_id] = result.get(row.device_id, 0) + int(row.amount_fen)
        return result

    def _existing_cases(self, device_row_ids: list[int]) -> dict[tuple[int, str], dict[str, Any]]:
        cases: dict[tuple[int, str], dict[str, Any]] = {}
        for row in self.connection.execute(
            select(offline_fraud_cases).where(offline_fraud_cases.c.device_id.in_(device_row_ids))
        ):
            cases[(row.device_id, row.code)] = {
                "id": row.id,
                "counters": set(json.loads(row.counters_json)),
                "hashes": json.loads(row.payment_hashes_json),
                "amount_fen": row.amount_fen,
                "detail": row.detail,
                "changed": False,
            }
        return cases

    # --- 2. lock wallets -------------------------------------------------------------------

    def lock_wallets(self, extra: Iterable[str] = ()) -> dict[str, WalletRow]:
        wanted = {wallet for wallet, _ in self.payees.values()} | set(extra)
        self.wallets = load_wallets(self.connection, wanted, lock=True, require_all=False)
        float_ids = {row.operator_float_account_id for row in self.wallets.values()}
        float_ids |= {book.row.operator_float_account_id for book in self.books.values()}
        if float_ids:
            self.floats = {
                int(row.id): int(row.balance_fen)
                for row in self.connection.execute(
                    select(accounts.c.id, accounts.c.balance_fen)
                    .where(accounts.c.id.in_(sorted(float_ids)))
                )
            }
        return self.wallets

    # --- 3. decide -------------------------------------------------------------------------

    def decide(self, device_ids: Iterable[str] | None = None) -> None:
        """Classify and decide the books of ``device_ids``, in that order (default: every
        book, in the order the run was given its devices)."""
        assert self.revocations is not None, "load() first"
        books = (list(self.books.values()) if device_ids is None
                 else [self.books[device_id] for device_id in device_ids])
        for book in books:
            book.classification = classify_device_payments(
                book.row.device_id, (),
                root_public_key=root_public_key(self.context),
                loads=book.loads, unloads=book.unloads,
                revocations=self.revocations.current,
                verified=[self._verified(book, p) for p in book.payments],
            )
            for finding in book.classification.findings:
                self.record_finding(book, finding)
            self._decide_payments(book)

    def _verified(self, book: DeviceBook, payment: StoredPayment) -> VerifiedPayment:
        return VerifiedPayment(payment.payment_hash, payment.message, payment.signature,
                               book.certificate, book.operator_certificate)

    def record_finding(self, book: DeviceBook, finding: Finding) -> None:
        amounts = {p.payment_hash: p.amount_fen for p in book.payments}
        self.open_case(book, str(finding.code), finding.counters, finding.payment_hashes,
                       lambda digest: amounts.get(digest, 0), finding.detail)
        if finding.code in REVOKING_CODES:
            self.revoke(book, str(finding.code))

    def open_case(
        self,
        book: DeviceBook,
        code: str,
        counters: Iterable[int],
        hashes: Iterable[str],
        amount_of: Any,
        detail: str,
    ) -> None:
        """Open the device's case for ``code``, or add the newly named payments to it."""
        key = (book.row.id, code)
        case = self.cases.setdefault(key, {
            "id": None, "counters": set(), "hashes": [], "amount_fen": 0, "detail": detail,
            "changed": True,
        })
        known = set(case["hashes"])
        fresh = [digest for digest in hashes if digest not in known]
        new_counters = set(counters) - case["counters"]
        if not fresh and not new_counters:
            return
        case["hashes"] = sorted(known | set(fresh))
        case["counters"] |= set(counters)
        # Forged payments' claims count too; the total stops at the most an account can hold.
        case["amount_fen"] = min(AMOUNT_FEN_MAX,
                                 case["amount_fen"] + sum(amount_of(digest) for digest in fresh))
        case["detail"] = detail
        case["changed"] = True

    def revoke(self, book: DeviceBook, reason: str) -> None:
        if book.row.status == "active" and book.revoke_reason is None:
            book.revoke_reason = reason
            self.revoked.append(book.row.device_id)

    def _decide_payments(self, book: DeviceBook) -> None:
        assert book.classification is not None
        flagged = book.classification.flagged
        pending = [p for p in book.payments if p.status == "pending"]
        honest = [p for p in pending if p.payment_hash not in flagged]
        dubious = [p for p in pending if p.payment_hash in flagged]
        for payment in honest:
            self._decide(book, payment, ())
        for payment in dubious:
            self._decide(book, payment, tuple(str(code) for code in flagged[payment.payment_hash]))

    def _decide(self, book: DeviceBook, payment: StoredPayment, codes: tuple[str, ...]) -> None:
        payee_info = self.payees.get(payment.payee_device)
        payee = self.wallets.get(payment.payee_wallet)
        if payee_info is None or payee_info[0] != payment.payee_wallet or payee is None:
            self._status(payment, "unpaid", "offline_payee_unknown")
            return
        if codes:
            refusal = self._payee_refusal(book, payment, payee_info[1])
            if refusal is not None:
                self._status(payment, "unpaid", refusal)
                return
        source = self._source(book, payment, codes)
        if source == "operator" and codes and (
            book.flagged_loss_fen + payment.amount_fen > book.row.caps.balance_fen_max
        ):
            self._status(payment, "unpaid", "offline_loss_cap_reached")
            return
        try:
            check_active(payee)
            plan = self.plan_for(payee, payment.amount_fen)
        except CbdcError as error:
            if source == "escrow" and not codes:
                book.reserved_fen += payment.amount_fen
            self._status(payment, "pending", error.code)
            return
        if source == "operator" and (
            self.floats.get(book.row.operator_float_account_id, 0) < payment.amount_fen
        ):
            self._status(payment, "pending", "operator_float_insufficient")
            return
        self._apply(Payout(book, payment, source, payee, plan, codes))

    def _payee_refusal(self, book: DeviceBook, payment: StoredPayment, number: int) -> str | None:
        assert self.revocations is not None
        try:
            check_payment_acceptable(self._verified(book, payment),
                                     self.revocations.as_of_list(number),
                                     _created_at(payment))
        except (CertificateRefused, OfflineRefused) as refusal:
            return refusal.code
        return None

    def _source(self, book: DeviceBook, payment: StoredPayment, codes: tuple[str, ...]) -> str:
        escrow_may_pay = not codes or set(codes) <= ESCROW_PAYS_FLAGS
        if (escrow_may_pay and payment.counter not in book.escrow_counters
                and book.room_fen >= payment.amount_fen):
            return "escrow"
        return "operator"

    def plan_for(self, payee: WalletRow, amount_fen: int) -> TransferPlan:
        """How ``amount_fen`` reaches ``payee`` under its balance cap (waterfall or refusal);
        incoming offline value never counts as the payee's spending."""
        key = (payee.wallet_class, payee.caps, payee.usage, payee.bank_account_ref,
               payee.reverse_waterfall)
        known = self._parties.get(payee.wallet_id)
        if known is None or known[0] != key:
            known = (key, party(self.context, payee, self.now))
            self._parties[payee.wallet_id] = known
        receiving = replace(known[1], balance_fen=payee.balance_fen)
        escrow = Party(wallet_id="escrow", balance_fen=amount_fen, limits=receiving.limits,
                       usage=receiving.usage)
        return plan_transfer(escrow, receiving, amount_fen, counts_as_spending=False,
                             reverse_waterfall_allowed=False)

    def _apply(self, payout: Payout) -> None:
        book, payment, plan = payout.book, payout.payment, payout.plan
        if payout.source == "escrow":
            book.settled_fen += payment.amount_fen
            book.escrow_counters.add(payment.counter)
            self._status(payment, "settled", None)
        else:
            book.operator_paid_fen += payment.amount_fen
            if payout.codes:
                book.flagged_loss_fen += payment.amount_fen
            self.floats[book.row.operator_float_account_id] -= payment.amount_fen
            self._status(payment, "operator_paid", None)
        payee = self.wallets[payout.payee.wallet_id]
        self.wallets[payee.wallet_id] = replace(
            payee, balance_fen=payee.balance_fen + plan.amount_fen - plan.swept_fen
        )
        if plan.swept_fen:
            self.floats[payee.operator_float_account_id] = (
                self.floats.get(payee.operator_float_account_id, 0) + plan.swept_fen
            )
        self.payouts.append(payout)

    def credit(self, wallet_id: str, amount_fen: int) -> None:
        """Move a locked wallet's running balance (a caller's own entry, say an unload)."""
        row = self.wallets[wallet_id]
        self.wallets[wallet_id] = replace(row, balance_fen=row.balance_fen + amount_fen)

    def _status(self, payment: StoredPayment, status: str, reason: str | None) -> None:
        self.statuses[payment.payment_hash] = (status, reason)

    # --- 4. entries and rows ---------------------------------------------------------------

    def drafts(self, payouts: Sequence[Payout] | None = None) -> list[EntryDraft]:
        """Per device, one ``offline_settlement`` entry (escrow to its payees); per payment
        paid by an operator, one ``operator_loss`` entry; then the waterfalls. ``payouts``:
        some of the run's payouts (default: all of them)."""
        payouts = self.payouts if payouts is None else payouts
        drafts: list[EntryDraft] = []
        by_book: dict[str, list[Payout]] = {}
        for payout in payouts:
            if payout.source == "escrow":
                by_book.setdefault(payout.book.row.device_id, []).append(payout)
        for device_id, paid in by_book.items():
            drafts.append(self._settlement_draft(device_id, paid))
        for payout in payouts:
            if payout.source == "operator":
                drafts.append(self._loss_draft(payout))
        for payout in payouts:
            if payout.plan.swept_fen:
                entry_id = f"offline-waterfall:{payout.payment.payment_hash}"
                drafts.append(transfer(
                    entry_id, "waterfall",
                    debit_account_id=payout.payee.account_id,
                    credit_account_id=payout.payee.operator_float_account_id,
                    amount_fen=payout.plan.swept_fen,
                    metadata={"wallet": payout.payee.wallet_id,
                              "for": payout.payment.payment_hash},
                ))
        return drafts

    def _settlement_draft(self, device_id: str, payouts: list[Payout]) -> EntryDraft:
        book = payouts[0].book
        digest = hashlib.sha256(
            "".join(p.payment.payment_hash for p in payouts).encode("ascii")
        ).hexdigest()[:24]
        entry_id = f"offline-settlement:{device_id}:{digest}"
        credits: dict[int, int] = {}
        for payout in payouts:
            account = payout.payee.account_id
            credits[account] = credits.get(account, 0) + payout.payment.amount_fen
        total = sum(credits.values())
        postings = (Posting(book.row.escrow_account_id, -total),
                    *(Posting(account, amount) for account, amount in sorted(credits.items())))
        for payout in payouts:
            self._entries[payout.payment.payment_hash] = entry_id
        return EntryDraft(entry_id, "offline_settlement", postings,
                          {"device": device_id, "payments": len(payouts)})

    def _loss_draft(self, payout: Payout) -> EntryDraft:
        book, payment = payout.book, payout.payment
        entry_id = f"operator-loss:{payment.payment_hash}"
        self._entries[payment.payment_hash] = entry_id
        return transfer(
            entry_id, "operator_loss",
            debit_account_id=book.row.operator_float_account_id,
            credit_account_id=payout.payee.account_id,
            amount_fen=payment.amount_fen,
            metadata={"operator": book.row.operator_code, "device": book.row.device_id,
                      "payment_hash": payment.payment_hash, "codes": list(payout.codes)},
        )

    def write(self, posted: Sequence[PostedEntry | CbdcError]) -> None:
        seqs = {entry.entry_id: entry.seq for entry in posted if isinstance(entry, PostedEntry)}
        self._write_payouts(seqs)
        self._write_statuses()
        self._write_devices()
        self._write_cases()

    def _write_payouts(self, seqs: Mapping[str, int]) -> None:
        at = self.now
        settlements, losses = [], []
        for payout in self.payouts:
            payment = payout.payment
            seq = seqs[self._entries[payment.payment_hash]]
            if payout.source == "escrow":
                settlements.append({
                    "payment_id": payment.id, "payer_device_id": payout.book.row.id,
                    "counter": payment.counter, "payee_wallet_id": payout.payee.id,
                    "amount_fen": payment.amount_fen, "swept_fen": payout.plan.swept_fen,
                    "entry_seq": seq, "settled_at": at,
                })
            else:
                losses.append({
                    "payment_id": payment.id, "device_id": payout.book.row.id,
                    "operator_id": payout.book.row.operator_id,
                    "payee_wallet_id": payout.payee.id, "amount_fen": payment.amount_fen,
                    "swept_fen": payout.plan.swept_fen, "codes": ",".join(payout.codes),
                    "entry_seq": seq, "paid_at": at,
                })
        if settlements:
            self.connection.execute(insert(offline_settlements), settlements)
        if losses:
            self.connection.execute(insert(offline_operator_losses), losses)

    def _write_statuses(self) -> None:
        current = {p.payment_hash: (p.status, p.reason)
                   for book in self.books.values() for p in book.payments}
        changed = [
            {"h": digest, "s": status, "r": reason}
            for digest, (status, reason) in sorted(self.statuses.items())
            if current.get(digest) != (status, reason)
        ]
        if changed:
            self.connection.execute(
                update(offline_payments)
                .where(offline_payments.c.payment_hash == bindparam("h"))
                .values(status=bindparam("s"), reason=bindparam("r")),
                changed,
            )

    def _write_devices(self) -> None:
        totals = [
            {"i": book.row.id, "s": book.settled_fen, "o": book.operator_paid_fen}
            for book in self.books.values()
            if (book.settled_fen, book.operator_paid_fen)
            != (book.row.settled_fen, book.row.operator_paid_fen)
        ]
        if totals:
            self.connection.execute(
                update(offline_devices).where(offline_devices.c.id == bindparam("i"))
                .values(settled_fen=bindparam("s"), operator_paid_fen=bindparam("o")),
                totals,
            )
        self.write_revocations()

    def write_revocations(self) -> bool:
        """Record the revocations decided and not yet written; say whether there were any."""
        wrote = False
        for book in self.books.values():
            if book.revoke_reason is not None and not book.revocation_written:
                self.connection.execute(insert(offline_revocations).values(
                    device_id=book.row.id, serial=book.row.certificate_serial,
                    reason=book.revoke_reason, revoked_at=self.now,
                ))
                self.connection.execute(
                    update(offline_devices).where(offline_devices.c.id == book.row.id)
                    .values(status="revoked", revoked_at=self.now)
                )
                book.revocation_written = wrote = True
        return wrote

    def _write_cases(self) -> None:
        books = {book.row.id: book for book in self.books.values()}
        for (device_row_id, code), case in self.cases.items():
            if not case["changed"]:
                continue
            values = {
                "counters_json": json.dumps(sorted(case["counters"])),
                "payment_hashes_json": json.dumps(case["hashes"]),
                "payments_count": len(case["hashes"]),
                "amount_fen": case["amount_fen"],
                "detail": case["detail"],
                "updated_at": self.now,
            }
            if case["id"] is None:
                book = books[device_row_id]
                self.connection.execute(insert(offline_fraud_cases).values(
                    device_id=device_row_id, wallet_id=book.row.wallet_row_id,
                    operator_id=book.row.operator_id, code=code, opened_at=self.now, **values,
                ))
            else:
                self.connection.execute(
                    update(offline_fraud_cases).where(offline_fraud_cases.c.id == case["id"])
                    .values(**values)
                )

    # --- for the services ------------------------------------------------------------------

    def statuses_of(self, device_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """The payments of these devices, by hash: (status, reason) as decided so far."""
        result = {}
        for device_id in device_ids:
            for payment in self.books[device_id].payments:
                result[payment.payment_hash] = self.statuses.get(
                    payment.payment_hash, (payment.status, payment.reason))
        return result

    def final_statuses(self) -> dict[str, tuple[str, str | None]]:
        """Every payment of the run's devices, by hash: (status, reason) after the run."""
        result = {p.payment_hash: (p.status, p.reason)
                  for book in self.books.values() for p in book.payments}
        result.update(self.statuses)
        return result


def _created_at(payment: StoredPayment) -> datetime:
    return parse_time(payment.message["created_at"])
