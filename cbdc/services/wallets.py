"""Wallets: opening, class changes, freezing, closing, and sub-wallets.

An operator opens a wallet for a holder at the class its identity evidence supports (a new user
usually starts at class 4 with a phone number). The wallet gets an account of kind ``wallet``
held at the operator, and a row with its class, zone, status and running limit counters. The
evidence goes to the operator-side ``wallet_identities`` table as salted hashes
(:mod:`cbdc.domain.identity`); the ledger itself only sees the pseudonymous wallet id.

A class change is refused when the evidence is missing (``identity_evidence_missing``) or the
wallet's balance or today's/this year's spending already break the new class's caps
(``class_change_refused``, naming the cap). Moving to class 3 or 4 unlinks the bank account.

A sub-wallet is authorised by its parent (say, for a merchant's till app) with its own caps, each
no looser than the parent's; it shares the parent's operator, class and zone. The parent closes
it, which sweeps what it holds back to the parent in one entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from cbdc.domain.errors import AlreadyExists, Forbidden, InvalidRequest, StatusRefused
from cbdc.domain.identity import SALT_BYTES as IDENTITY_SALT_BYTES
from cbdc.domain.identity import IdentityEvidence, bank_account_ref, evidence_hash
from cbdc.domain.postings import EntryDraft, transfer
from cbdc.domain.settlement import Party, plan_transfer
from cbdc.domain.tiers import (
    Limits,
    Usage,
    check_class_change,
    check_evidence,
    check_sub_wallet_caps,
)
from cbdc.services.context import LedgerContext
from cbdc.services.issuance import get_operator
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.tables import accounts, wallet_identities, wallets
from cbdc.storage.wallets import (
    WalletRow,
    find_entry,
    find_wallet,
    load_wallet,
    load_wallets,
    open_sub_wallet_ids,
)

WALLET_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
ZONE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MERCHANT_CATEGORY_CODE = re.compile(r"^[0-9]{4}$")


@dataclass(frozen=True, slots=True)
class Wallet:
    """A wallet as a caller sees it: limits in force, balance, and usage as of now."""

    wallet_id: str
    operator_code: str
    holder_kind: str
    merchant_category_code: str | None
    wallet_class: int
    zone: str
    status: str
    parent_wallet_id: str | None
    caps: Limits
    limits: Limits
    bank_account_ref: str | None
    reverse_waterfall: bool
    balance_fen: int
    usage: Usage


def wallet_account_code(wallet_id: str) -> str:
    return f"w:{wallet_id}"


def effective_limits(context: LedgerContext, row: WalletRow) -> Limits:
    """The class's caps, tightened by the wallet's own caps (sub-wallets)."""
    return context.wallet_classes.get(row.wallet_class).limits.tightened(row.caps)


def party(context: LedgerContext, row: WalletRow, now: datetime) -> Party:
    """What the settlement rules need to know of a wallet, at ``now``."""
    return Party(
        wallet_id=row.wallet_id,
        balance_fen=row.balance_fen,
        limits=effective_limits(context, row),
        usage=row.usage.at(now),
        bank_account_linked=row.bank_account_ref is not None,
        reverse_waterfall=row.reverse_waterfall,
    )


def check_active(row: WalletRow) -> None:
    """Frozen and closed wallets neither pay nor receive."""
    if row.status != "active":
        raise StatusRefused(
            f"wallet {row.wallet_id} is {row.status}",
            code=f"wallet_{row.status}",
            wallet=row.wallet_id,
        )


def check_merchant(row: WalletRow) -> None:
    """Only merchants collect through payment requests and payment codes: corporate wallets
    with a merchant category code."""
    if row.merchant_category_code is None:
        raise Forbidden(f"wallet {row.wallet_id} is not a merchant wallet",
                        code="not_a_merchant")


def _as_wallet(context: LedgerContext, row: WalletRow) -> Wallet:
    return Wallet(
        wallet_id=row.wallet_id,
        operator_code=row.operator_code,
        holder_kind=row.holder_kind,
        merchant_category_code=row.merchant_category_code,
        wallet_class=row.wallet_class,
        zone=row.zone,
        status=row.status,
        parent_wallet_id=row.parent_wallet_id,
        caps=row.caps,
        limits=effective_limits(context, row),
        bank_account_ref=row.bank_account_ref,
        reverse_waterfall=row.reverse_waterfall,
        balance_fen=row.balance_fen,
        usage=row.usage.at(context.now()),
    )


def get_wallet(context: LedgerContext, wallet_id: str) -> Wallet:
    with context.read() as connection:
        return _as_wallet(context, load_wallet(connection, wallet_id))


def _check_wallet_id(wallet_id: object) -> str:
    if not isinstance(wallet_id, str) or not WALLET_ID.match(wallet_id):
        raise InvalidRequest(
            f"wallet id must be 1-64 of A-Z a-z 0-9 . _ : -, got {wallet_id!r}",
            code="wallet_id_invalid",
        )
    return wallet_id


def _check_holder(holder_kind: str, merchant_category_code: str | None) -> None:
    if holder_kind not in ("personal", "corporate"):
        raise InvalidRequest("holder kind is 'personal' or 'corporate'", code="holder_kind_invalid")
    if merchant_category_code is None:
        return
    if holder_kind != "corporate" or not MERCHANT_CATEGORY_CODE.match(merchant_category_code):
        raise InvalidRequest(
            "a merchant category code is four digits, for corporate wallets only",
            code="merchant_category_code_invalid",
        )


def open_wallet(
    context: LedgerContext,
    wallet_id: str,
    *,
    operator_code: str,
    evidence: IdentityEvidence,
    zone: str,
    wallet_class: int = 4,
    holder_kind: str = "personal",
    merchant_category_code: str | None = None,
    reverse_waterfall: bool = False,
) -> Wallet:
    """Open a wallet at ``operator_code`` for the holder behind ``evidence``.

    Idempotent on ``wallet_id``: a repeat for the same operator, holder and zone returns the
    wallet as it is now; anything else is ``wallet_exists``."""
    _check_wallet_id(wallet_id)
    _check_holder(holder_kind, merchant_category_code)
    if not isinstance(zone, str) or not ZONE.match(zone):
        raise InvalidRequest(f"zone must be 1-64 of A-Z a-z 0-9 . _ -, got {zone!r}",
                             code="zone_invalid")
    target = context.wallet_classes.get(wallet_class)
    evidence = evidence.normalised()
    check_evidence(target, evidence.kinds())
    if reverse_waterfall and not target.links_bank_account:
        raise InvalidRequest(
            f"class {wallet_class} wallets have no linked bank account for a reverse waterfall",
            code="reverse_waterfall_unavailable",
        )
    with context.write() as connection:
        existing = find_wallet(connection, wallet_id)
        if existing is not None:
            _check_same_wallet(connection, existing, operator_code, holder_kind,
                               merchant_category_code, zone, evidence)
            return _as_wallet(context, existing)
        operator = get_operator(connection, operator_code)
        salt = context.random_bytes(IDENTITY_SALT_BYTES)
        now = context.now()
        row_id = _insert_wallet(
            connection,
            wallet_id=wallet_id,
            operator_id=operator.id,
            now=now,
            holder_kind=holder_kind,
            merchant_category_code=merchant_category_code,
            wallet_class=wallet_class,
            zone=zone,
            bank_account_ref=_link(target.links_bank_account, _hashes(salt, evidence)),
            reverse_waterfall=reverse_waterfall,
        )
        connection.execute(
            insert(wallet_identities).values(
                wallet_id=row_id, salt=salt.hex(), updated_at=now, **_hashes(salt, evidence)
            )
        )
        return _as_wallet(context, load_wallet(connection, wallet_id))


def _insert_wallet(connection: Connection, *, wallet_id: str, operator_id: int, now: datetime,
                   **values: Any) -> int:
    account_id = connection.execute(
        insert(accounts)
        .values(code=wallet_account_code(wallet_id), kind="wallet", institution_id=operator_id,
                created_at=now)
        .returning(accounts.c.id)
    ).scalar_one()
    usage = Usage.fresh(now)
    return int(
        connection.execute(
            insert(wallets)
            .values(
                wallet_id=wallet_id,
                operator_id=operator_id,
                account_id=account_id,
                status="active",
                usage_day=usage.day,
                usage_year=usage.year,
                spent_day_fen=0,
                spent_year_fen=0,
                created_at=now,
                **values,
            )
            .returning(wallets.c.id)
        ).scalar_one()
    )


def _hashes(salt: bytes, evidence: IdentityEvidence) -> dict[str, Any]:
    def optional(kind: str, value: str | None) -> str | None:
        return None if value is None else evidence_hash(salt, kind, value)

    return {
        "phone_hash": evidence_hash(salt, "phone", evidence.phone),
        "id_document_hash": optional("id_document", evidence.id_document),
        "bank_account_hash": optional("bank_account", evidence.bank_account),
        "verified_in_person": evidence.in_person,
    }


def _check_same_wallet(
    connection: Connection,
    existing: WalletRow,
    operator_code: str,
    holder_kind: str,
    merchant_category_code: str | None,
    zone: str,
    evidence: IdentityEvidence,
) -> None:
    identity = connection.execute(
        select(wallet_identities.c.salt, wallet_identities.c.phone_hash).where(
            wallet_identities.c.wallet_id == existing.id
        )
    ).first()
    same = (
        identity is not None
        and existing.parent_id is None
        and (existing.operator_code, existing.holder_kind, existing.merchant_category_code,
             existing.zone) == (operator_code, holder_kind, merchant_category_code, zone)
        and evidence_hash(bytes.fromhex(identity.salt), "phone", evidence.phone)
        == identity.phone_hash
    )
    if not same:
        raise AlreadyExists(
            f"wallet {existing.wallet_id} exists for another holder or operator",
            code="wallet_exists",
        )


def change_class(
    context: LedgerContext,
    wallet_id: str,
    wallet_class: int,
    *,
    evidence: IdentityEvidence | None = None,
    reverse_waterfall: bool | None = None,
) -> Wallet:
    """Upgrade or downgrade a wallet. New ``evidence`` replaces what the operator holds (it must
    be for the same phone); without it, the evidence on record must support the class.
    Sub-wallets follow their parent's class and cannot change on their own."""
    target = context.wallet_classes.get(wallet_class)
    if evidence is not None:
        evidence = evidence.normalised()
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        subs = load_wallets(connection, open_sub_wallet_ids(connection, row.id), lock=True)
        if row.parent_id is not None:
            raise InvalidRequest("a sub-wallet takes its parent's class",
                                 code="sub_wallet_class_fixed")
        if row.status == "closed":
            check_active(row)
        hashes = _evidence_on_record(connection, row, evidence)
        check_evidence(target, _kinds(hashes))
        now = context.now()
        for wallet in (row, *subs.values()):
            check_class_change(target.limits.tightened(wallet.caps), wallet.balance_fen,
                               wallet.usage.at(now))
        link = _link(target.links_bank_account, hashes)
        waterfall = row.reverse_waterfall if reverse_waterfall is None else reverse_waterfall
        if waterfall and link is None:
            raise InvalidRequest(
                f"class {wallet_class} wallets have no linked bank account for a reverse waterfall",
                code="reverse_waterfall_unavailable",
            )
        if evidence is not None:
            connection.execute(
                update(wallet_identities)
                .where(wallet_identities.c.wallet_id == row.id)
                .values(updated_at=now, **hashes)
            )
        connection.execute(
            update(wallets).where(wallets.c.id == row.id).values(
                wallet_class=wallet_class, bank_account_ref=link, reverse_waterfall=waterfall
            )
        )
        if subs:
            connection.execute(
                update(wallets).where(wallets.c.parent_id == row.id).values(
                    wallet_class=wallet_class
                )
            )
        return _as_wallet(context, load_wallet(connection, wallet_id))


def _evidence_on_record(
    connection: Connection, row: WalletRow, evidence: IdentityEvidence | None
) -> dict[str, Any]:
    """The evidence hashes that will stand after the change: ``evidence`` (which must
    be for the same phone) hashed under the wallet's salt, or what the operator holds."""
    identity = connection.execute(
        select(wallet_identities).where(wallet_identities.c.wallet_id == row.id)
    ).one()
    salt = bytes.fromhex(identity.salt)
    if evidence is None:
        return {name: getattr(identity, name) for name in _HASH_COLUMNS}
    if evidence_hash(salt, "phone", evidence.phone) != identity.phone_hash:
        raise InvalidRequest(
            "new evidence is for another phone than the wallet's holder",
            code="identity_evidence_mismatch",
        )
    return _hashes(salt, evidence)


_HASH_COLUMNS = ("phone_hash", "id_document_hash", "bank_account_hash", "verified_in_person")


def _kinds(hashes: dict[str, Any]) -> frozenset[str]:
    held = {"phone"}
    if hashes["id_document_hash"] is not None:
        held.add("id_document")
    if hashes["bank_account_hash"] is not None:
        held.add("bank_account")
    if hashes["verified_in_person"]:
        held.add("in_person")
    return frozenset(held)


def _link(class_links_bank_account: bool, hashes: dict[str, Any]) -> str | None:
    if not class_links_bank_account or hashes["bank_account_hash"] is None:
        return None
    return bank_account_ref(hashes["bank_account_hash"])


def set_reverse_waterfall(context: LedgerContext, wallet_id: str, enabled: bool) -> Wallet:
    """The holder opts in to (or out of) topping up shortfalls from the linked bank account."""
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        check_active(row)
        if enabled and row.bank_account_ref is None:
            raise InvalidRequest(
                f"wallet {wallet_id} has no linked bank account",
                code="reverse_waterfall_unavailable",
            )
        connection.execute(
            update(wallets).where(wallets.c.id == row.id).values(reverse_waterfall=enabled)
        )
        return _as_wallet(context, load_wallet(connection, wallet_id))


def freeze(context: LedgerContext, wallet_id: str) -> Wallet:
    """Stop a wallet paying and receiving (a lost phone, a court order). Idempotent."""
    return _set_status(context, wallet_id, "frozen")


def unfreeze(context: LedgerContext, wallet_id: str) -> Wallet:
    return _set_status(context, wallet_id, "active")


def _set_status(context: LedgerContext, wallet_id: str, status: str) -> Wallet:
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        if row.status == "closed":
            check_active(row)
        connection.execute(update(wallets).where(wallets.c.id == row.id).values(status=status))
        return _as_wallet(context, load_wallet(connection, wallet_id))


def close_wallet(context: LedgerContext, wallet_id: str) -> Wallet:
    """Close an empty wallet with no open sub-wallets. Idempotent; closed is final."""
    with context.write() as connection:
        row = load_wallet(connection, wallet_id, lock=True)
        if row.status == "closed":
            return _as_wallet(context, row)
        if open_sub_wallet_ids(connection, row.id):
            raise StatusRefused(f"wallet {wallet_id} has open sub-wallets",
                                code="wallet_has_sub_wallets")
        if row.balance_fen != 0:
            raise StatusRefused(
                f"wallet {wallet_id} still holds {row.balance_fen} fen; withdraw it first",
                code="wallet_not_empty",
                balance_fen=row.balance_fen,
            )
        _close(connection, row, context.now())
        return _as_wallet(context, load_wallet(connection, wallet_id))


def _close(connection: Connection, row: WalletRow, now: datetime) -> None:
    connection.execute(
        update(wallets).where(wallets.c.id == row.id).values(status="closed", closed_at=now)
    )


def authorise_sub_wallet(
    context: LedgerContext, parent_wallet_id: str, sub_wallet_id: str, caps: Limits
) -> Wallet:
    """The parent authorises a sub-wallet with its own caps, each at most the parent's.

    Idempotent on ``sub_wallet_id`` (same parent and caps: the sub-wallet as it is now)."""
    _check_wallet_id(sub_wallet_id)
    with context.write() as connection:
        parent = load_wallet(connection, parent_wallet_id, lock=True)
        existing = find_wallet(connection, sub_wallet_id)
        if existing is not None:
            if existing.parent_id != parent.id or existing.caps != caps:
                raise AlreadyExists(f"wallet {sub_wallet_id} exists", code="wallet_exists")
            return _as_wallet(context, existing)
        check_active(parent)
        if parent.parent_id is not None:
            raise InvalidRequest("a sub-wallet cannot have sub-wallets",
                                 code="sub_wallet_nesting")
        check_sub_wallet_caps(effective_limits(context, parent), caps)
        _insert_wallet(
            connection,
            wallet_id=sub_wallet_id,
            operator_id=parent.operator_id,
            now=context.now(),
            holder_kind=parent.holder_kind,
            merchant_category_code=parent.merchant_category_code,
            wallet_class=parent.wallet_class,
            zone=parent.zone,
            parent_id=parent.id,
            cap_balance_fen=caps.balance_fen_max,
            cap_payment_fen=caps.payment_fen_max,
            cap_daily_outgoing_fen=caps.daily_outgoing_fen_max,
            cap_annual_outgoing_fen=caps.annual_outgoing_fen_max,
        )
        return _as_wallet(context, load_wallet(connection, sub_wallet_id))


@dataclass(frozen=True, slots=True)
class SubWalletClosed:
    wallet: Wallet
    swept: PostedEntry | None


def close_sub_wallet(
    context: LedgerContext, entry_id: str, parent_wallet_id: str, sub_wallet_id: str
) -> SubWalletClosed:
    """The parent closes a sub-wallet; what it holds goes back to the parent in entry
    ``entry_id`` (kind ``sub_wallet_sweep``), over the parent's cap only through a waterfall.
    A frozen sub-wallet can be closed this way; a frozen parent cannot receive."""
    with context.write() as connection:
        rows = load_wallets(connection, [parent_wallet_id, sub_wallet_id], lock=True)
        parent, sub = rows[parent_wallet_id], rows[sub_wallet_id]
        if sub.parent_id != parent.id:
            raise InvalidRequest(f"{sub_wallet_id} is not a sub-wallet of {parent_wallet_id}",
                                 code="not_a_sub_wallet")
        if sub.status == "closed":
            return SubWalletClosed(_as_wallet(context, sub), find_entry(connection, entry_id))
        drafts = _sweep_drafts(context, entry_id, parent, sub)
        swept: PostedEntry | None = None
        if drafts:
            check_active(parent)
            first = post_entries(connection, drafts, now=context.now())[0]
            assert isinstance(first, PostedEntry)
            swept = first
        _close(connection, sub, context.now())
        return SubWalletClosed(_as_wallet(context, load_wallet(connection, sub_wallet_id)), swept)


def _sweep_drafts(
    context: LedgerContext, entry_id: str, parent: WalletRow, sub: WalletRow
) -> list[EntryDraft]:
    if sub.balance_fen == 0:
        return []
    now = context.now()
    plan = plan_transfer(party(context, sub, now), party(context, parent, now), sub.balance_fen,
                         counts_as_spending=False, reverse_waterfall_allowed=False)
    drafts = [
        transfer(entry_id, "sub_wallet_sweep", debit_account_id=sub.account_id,
                 credit_account_id=parent.account_id, amount_fen=sub.balance_fen,
                 metadata={"from": sub.wallet_id, "to": parent.wallet_id})
    ]
    if plan.swept_fen:
        drafts.append(
            transfer(f"{entry_id}:waterfall", "waterfall", debit_account_id=parent.account_id,
                     credit_account_id=parent.operator_float_account_id,
                     amount_fen=plan.swept_fen, metadata={"wallet": parent.wallet_id})
        )
    return drafts
