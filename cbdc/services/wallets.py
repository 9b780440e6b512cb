"""Wallets: opening, class changes, freezing, closing, and sub-wallets.

An operator opens a wallet for a holder at the class its identity evidence supports (a new user
usually starts at class 4 with a phone number). The wallet gets an account of kind ``wallet``
held at the operator, and a row with its class, zone, status and running limit counters. The
evidence goes to the operator-side ``wallet_identities`` table as salted hashes
(:mod:`cbdc.domain.identity`); the ledger itself only sees the pseudonymous wallet id.

A class change is refused when the evidence is missing (``identity_evidence_missing``) or the
wallet's balance or today's/this year's spending already break the new class's caps
(``class_change_refused``, naming the cap). Moving to class 3 or 4 unlinks the bank account.

Many wallets open in one unit of work with :func:`open_wallets` (an onboarding run, the
simulation), each with its first key if wanted, each answered as one by one; ``open_wallet`` is
the batch of one. The rule for enrolling a key (:func:`key_enrolment_needed`) lives here for
that reason; :mod:`cbdc.services.keys` uses it too.

A sub-wallet is authorised by its parent (say, for a merchant's till app) with its own caps, each
no looser than the parent's; it shares the parent's operator, class and zone. The parent closes
it, which sweeps what it holds back to the parent in one entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from cbdc.domain.errors import AlreadyExists, CbdcError, Forbidden, InvalidRequest, StatusRefused
from cbdc.domain.identity import SALT_BYTES as IDENTITY_SALT_BYTES
from cbdc.domain.identity import IdentityEvidence, bank_account_ref, evidence_hash
from cbdc.domain.postings import EntryDraft, check_caller_entry_id, transfer
from cbdc.domain.settlement import Party, plan_transfer
from cbdc.domain.signing import public_key_from_hex
from cbdc.domain.tiers import (
    Limits,
    Usage,
    check_class_change,
    check_evidence,
    check_sub_wallet_caps,
)
from cbdc.services.batches import only
from cbdc.services.context import LedgerContext
from cbdc.services.issuance import Operator, get_operator
from cbdc.storage.journal import PostedEntry, post_entries
from cbdc.storage.tables import wallet_identities, wallets
from cbdc.storage.wallets import (
    WalletRow,
    find_entry,
    find_wallet,
    insert_keys,
    insert_wallets,
    load_identities,
    load_keys,
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


@dataclass(frozen=True, slots=True)
class WalletOpening:
    """What :func:`open_wallet` takes, for one wallet of a batch (:func:`open_wallets`). With
    ``public_key_hex`` the key is enrolled as :func:`cbdc.services.keys.enrol_key` would enrol it
    right after the opening: both happen, or neither."""

    wallet_id: str
    operator_code: str
    evidence: IdentityEvidence
    zone: str
    wallet_class: int = 4
    holder_kind: str = "personal"
    merchant_category_code: str | None = None
    reverse_waterfall: bool = False
    public_key_hex: str | None = None


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
    opening = WalletOpening(wallet_id, operator_code, evidence, zone, wallet_class, holder_kind,
                            merchant_category_code, reverse_waterfall)
    return only(open_wallets(context, [opening]))


def open_wallets(
    context: LedgerContext, openings: Sequence[WalletOpening]
) -> list[Wallet | CbdcError]:
    """Open many wallets (and enrol their keys) in one unit of work. Each answer is what
    :func:`open_wallet` (then ``enrol_key``) would have answered had the openings before it been
    made one by one; a refused opening leaves nothing behind. Checks, in order: wallet id, holder
    kind and merchant category, zone, class, evidence, reverse waterfall; then a recorded wallet
    (the same holder: the wallet as it is; another: ``wallet_exists``) or the operator; then the
    key (``public_key_invalid``, ``public_key_exists``, ``public_key_revoked``,
    ``wallet_closed``)."""
    results: list[Wallet | CbdcError | None] = [None] * len(openings)
    checked: list[tuple[int, WalletOpening]] = []
    for index, opening in enumerate(openings):
        try:
            checked.append((index, _checked_opening(context, opening)))
        except CbdcError as error:
            results[index] = error
    if checked:
        with context.write() as connection:
            _open_checked(context, connection, checked, results)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _checked_opening(context: LedgerContext, opening: WalletOpening) -> WalletOpening:
    """The checks that need no database, in their order; the evidence normalised."""
    _check_wallet_id(opening.wallet_id)
    _check_holder(opening.holder_kind, opening.merchant_category_code)
    if not isinstance(opening.zone, str) or not ZONE.match(opening.zone):
        raise InvalidRequest(f"zone must be 1-64 of A-Z a-z 0-9 . _ -, got {opening.zone!r}",
                             code="zone_invalid")
    target = context.wallet_classes.get(opening.wallet_class)
    evidence = opening.evidence.normalised()
    check_evidence(target, evidence.kinds())
    if opening.reverse_waterfall and not target.links_bank_account:
        raise InvalidRequest(
            f"class {opening.wallet_class} wallets have no linked bank account for a reverse "
            "waterfall",
            code="reverse_waterfall_unavailable",
        )
    return replace(opening, evidence=evidence)


@dataclass(frozen=True, slots=True)
class _Holder:
    """Whom a wallet was opened for: a repeat for the same holder is idempotent. ``salt`` and
    ``phone_hash`` are None for a sub-wallet (no evidence of its own; never reopened)."""

    operator_code: str
    holder_kind: str
    merchant_category_code: str | None
    zone: str
    salt: bytes | None
    phone_hash: str | None

    def same(self, opening: WalletOpening) -> bool:
        return (
            self.salt is not None
            and (self.operator_code, self.holder_kind, self.merchant_category_code, self.zone)
            == (opening.operator_code, opening.holder_kind, opening.merchant_category_code,
                opening.zone)
            and evidence_hash(self.salt, "phone", opening.evidence.phone) == self.phone_hash
        )


@dataclass
class _OpeningBatch:
    """What a batch of openings knows so far: recorded wallets (locked), whom each wallet in
    play was opened for, enrolled keys (public key -> wallet id, status), operators looked up,
    and what is still to insert."""

    rows: dict[str, WalletRow]
    holders: dict[str, _Holder]
    keys: dict[str, tuple[str, str]]
    operators: dict[str, Operator | CbdcError] = field(default_factory=dict)
    #: Each new wallet's column values, then its identity's.
    new_wallets: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    #: (public key hex, wallet id).
    new_keys: list[tuple[str, str]] = field(default_factory=list)

    def operator(self, connection: Connection, code: str) -> Operator:
        if code not in self.operators:
            try:
                self.operators[code] = get_operator(connection, code)
            except CbdcError as error:
                self.operators[code] = error
        found = self.operators[code]
        if isinstance(found, CbdcError):
            raise found
        return found


def _open_checked(
    context: LedgerContext,
    connection: Connection,
    checked: list[tuple[int, WalletOpening]],
    results: list[Wallet | CbdcError | None],
) -> None:
    rows = load_wallets(connection, [opening.wallet_id for _, opening in checked], lock=True,
                        require_all=False)
    identities = load_identities(connection, [row.id for row in rows.values()])
    batch = _OpeningBatch(
        rows=rows,
        holders={wallet_id: _recorded_holder(row, identities.get(row.id))
                 for wallet_id, row in rows.items()},
        keys={key.public_key: (key.wallet_id, key.status) for key in load_keys(
            connection, [o.public_key_hex for _, o in checked if o.public_key_hex]).values()},
    )
    opened: list[tuple[int, str]] = []
    for index, opening in checked:
        try:
            _open_one(context, connection, batch, opening)
        except CbdcError as error:
            results[index] = error
            continue
        opened.append((index, opening.wallet_id))
    _insert(context, connection, batch)
    answered = load_wallets(connection, [wallet_id for _, wallet_id in opened])
    for index, wallet_id in opened:
        results[index] = _as_wallet(context, answered[wallet_id])


def _recorded_holder(row: WalletRow, identity: tuple[bytes, str] | None) -> _Holder:
    salt, phone_hash = (None, None) if identity is None or row.parent_id else identity
    return _Holder(row.operator_code, row.holder_kind, row.merchant_category_code, row.zone,
                   salt, phone_hash)


def _open_one(
    context: LedgerContext, connection: Connection, batch: _OpeningBatch, opening: WalletOpening
) -> None:
    """One opening against what the batch knows; its rows are queued only once it passes."""
    holder = batch.holders.get(opening.wallet_id)
    new_wallet: tuple[dict[str, Any], dict[str, Any]] | None = None
    if holder is None:
        operator = batch.operator(connection, opening.operator_code)
        salt = context.random_bytes(IDENTITY_SALT_BYTES)
        hashes = _hashes(salt, opening.evidence)
        holder = _Holder(opening.operator_code, opening.holder_kind,
                         opening.merchant_category_code, opening.zone, salt,
                         hashes["phone_hash"])
        target = context.wallet_classes.get(opening.wallet_class)
        new_wallet = (
            _wallet_values(
                opening.wallet_id, operator.id, holder_kind=opening.holder_kind,
                merchant_category_code=opening.merchant_category_code,
                wallet_class=opening.wallet_class, zone=opening.zone,
                bank_account_ref=_link(target.links_bank_account, hashes),
                reverse_waterfall=opening.reverse_waterfall,
            ),
            {"salt": salt.hex(), **hashes},
        )
    elif not holder.same(opening):
        raise AlreadyExists(
            f"wallet {opening.wallet_id} exists for another holder or operator",
            code="wallet_exists",
        )
    if opening.public_key_hex is not None:
        _enrol_in_batch(batch, opening.wallet_id, opening.public_key_hex)
    if new_wallet is not None:
        batch.holders[opening.wallet_id] = holder
        batch.new_wallets.append(new_wallet)


def _enrol_in_batch(batch: _OpeningBatch, wallet_id: str, public_key_hex: str) -> None:
    public_key_from_hex(public_key_hex)
    if key_enrolment_needed(batch.keys.get(public_key_hex), batch.rows.get(wallet_id),
                            wallet_id):
        batch.keys[public_key_hex] = (wallet_id, "active")
        batch.new_keys.append((public_key_hex, wallet_id))


def key_enrolment_needed(
    enrolled: tuple[str, str] | None, wallet: WalletRow | None, wallet_id: str
) -> bool:
    """Whether enrolling a key for ``wallet_id`` inserts it: False for a repeat. ``enrolled`` is
    the wallet id and status the key already has, if any; ``wallet`` the recorded wallet (None
    when it opens in this unit of work). Refused: a key of another wallet
    (``public_key_exists``), a revoked key (``public_key_revoked``), a closed wallet."""
    if enrolled is not None:
        enrolled_for, status = enrolled
        if enrolled_for != wallet_id:
            raise AlreadyExists("this public key is enrolled for another wallet",
                                code="public_key_exists")
        if status == "revoked":
            raise StatusRefused("this public key was revoked", code="public_key_revoked")
        return False
    if wallet is not None and wallet.status == "closed":
        check_active(wallet)
    return True


def _insert(context: LedgerContext, connection: Connection, batch: _OpeningBatch) -> None:
    """The batch's new wallets, their identities and its new keys, in batched statements."""
    now = context.now()
    row_ids = {wallet_id: row.id for wallet_id, row in batch.rows.items()}
    new_ids = insert_wallets(connection, [values for values, _ in batch.new_wallets], now=now)
    for (values, _), row_id in zip(batch.new_wallets, new_ids, strict=True):
        row_ids[values["wallet_id"]] = row_id
    if batch.new_wallets:
        connection.execute(
            insert(wallet_identities),
            [{**identity, "wallet_id": row_id, "updated_at": now}
             for (_, identity), row_id in zip(batch.new_wallets, new_ids, strict=True)],
        )
    insert_keys(connection, [(key, row_ids[wallet_id]) for key, wallet_id in batch.new_keys],
                now=now)


def _wallet_values(wallet_id: str, operator_id: int, **values: Any) -> dict[str, Any]:
    return {"wallet_id": wallet_id, "operator_id": operator_id,
            "account_code": wallet_account_code(wallet_id), **values}


def _hashes(salt: bytes, evidence: IdentityEvidence) -> dict[str, Any]:
    def optional(kind: str, value: str | None) -> str | None:
        return None if value is None else evidence_hash(salt, kind, value)

    return {
        "phone_hash": evidence_hash(salt, "phone", evidence.phone),
        "id_document_hash": optional("id_document", evidence.id_document),
        "bank_account_hash": optional("bank_account", evidence.bank_account),
        "verified_in_person": evidence.in_person,
    }
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
    Open sub-wallets follow their parent's class and cannot change on their own."""
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
            # Only the open ones: a closed sub-wallet's record is final.
            connection.execute(
                update(wallets)
                .where(wallets.c.id.in_([sub.id for sub in subs.values()]))
                .values(wallet_class=wallet_class)
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
        values = _wallet_values(
            sub_wallet_id,
            parent.operator_id,
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
        insert_wallets(connection, [values], now=context.now())
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
    check_caller_entry_id(entry_id)
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
