"""Operators: open, change, freeze and close wallets; sub-wallets; keys; top-up, withdrawal;
balance, limits left and history. Only the operator serving a wallet reaches it."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from api.auth import Ledger, Operator, OwnedWallet, WalletIdPath
from api.batches import item_results
from api.docs import AUTHENTICATED, MOVES_MONEY, WITH_BODY, problems
from api.idempotency import IdempotencyKey, run_idempotent
from api.json_body import StrictJsonRoute
from api.routes.central_bank import entry_out
from api.schemas import wallets as schemas
from api.schemas.central_bank import Entry
from cbdc.domain.errors import NotFound
from cbdc.domain.identity import IdentityEvidence
from cbdc.domain.postings import format_timestamp
from cbdc.domain.tiers import Limits
from cbdc.services import funding, keys, lookups, wallets

router = APIRouter(prefix="/v1/wallets", tags=["wallets"], route_class=StrictJsonRoute)
#: The batch funding routes, which name their wallets in the body.
funding_router = APIRouter(prefix="/v1", tags=["wallets"], route_class=StrictJsonRoute)
PublicKeyPath = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
WALLET = problems(*AUTHENTICATED, 404)
WALLET_BODY = problems(*AUTHENTICATED, *WITH_BODY, 404, 409)
WALLET_MONEY = problems(*AUTHENTICATED, *MOVES_MONEY, 404)


def limits_out(limits: Limits) -> schemas.LimitsOut:
    return schemas.LimitsOut.model_validate(limits.as_dict())


def wallet_out(wallet: wallets.Wallet) -> schemas.Wallet:
    left = lookups.limits_left(wallet)
    return schemas.Wallet(
        wallet_id=wallet.wallet_id, operator=wallet.operator_code,
        holder_kind=wallet.holder_kind, merchant_category_code=wallet.merchant_category_code,
        wallet_class=wallet.wallet_class, zone=wallet.zone, status=wallet.status,
        parent_wallet_id=wallet.parent_wallet_id, caps=limits_out(wallet.caps),
        limits=limits_out(wallet.limits), bank_account_linked=wallet.bank_account_ref is not None,
        reverse_waterfall=wallet.reverse_waterfall, balance_fen=wallet.balance_fen,
        usage=schemas.UsageOut(
            day=wallet.usage.day.isoformat(), spent_day_fen=wallet.usage.spent_day_fen,
            year=wallet.usage.year, spent_year_fen=wallet.usage.spent_year_fen,
        ),
        limits_left=schemas.LimitsLeftOut(
            daily_outgoing_left_fen=left.daily_outgoing_left_fen,
            annual_outgoing_left_fen=left.annual_outgoing_left_fen,
            balance_room_fen=left.balance_room_fen, payable_now_fen=left.payable_now_fen,
        ),
    )


def key_out(key: keys.WalletKey) -> schemas.WalletKey:
    return schemas.WalletKey(
        public_key=key.public_key, wallet_id=key.wallet_id, status=key.status,
        last_sequence=key.last_sequence, enrolled_at=format_timestamp(key.enrolled_at),
        revoked_at=None if key.revoked_at is None else format_timestamp(key.revoked_at),
    )


def evidence_of(evidence: schemas.Evidence) -> IdentityEvidence:
    return IdentityEvidence(
        phone=evidence.phone, id_document=evidence.id_document,
        bank_account=evidence.bank_account, in_person=evidence.in_person,
    )


@router.post("", status_code=201, response_model=schemas.Wallet, responses=WALLET_BODY,
             summary="Open a wallet for a holder (repeat: the same wallet)")
def open_wallet(body: schemas.WalletOpen, context: Ledger, principal: Operator) -> schemas.Wallet:
    return wallet_out(wallets.open_wallet(
        context, body.wallet_id, operator_code=principal.institution_code,
        evidence=evidence_of(body.evidence), zone=body.zone, wallet_class=body.wallet_class,
        holder_kind=body.holder_kind, merchant_category_code=body.merchant_category_code,
        reverse_waterfall=body.reverse_waterfall,
    ))


@router.post("/batch", response_model=schemas.WalletResults,
             responses=problems(*AUTHENTICATED, *MOVES_MONEY),
             summary="Open up to 1,000 wallets, each with its first key, in order, in one "
                     "unit of work")
def open_wallets(
    body: schemas.WalletBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each wallet is answered as `POST /v1/wallets` then `POST /v1/wallets/{id}/keys` would
    have answered it had the ones before it been opened one by one; a refused opening (its key
    included) leaves nothing behind."""
    def open_all() -> tuple[int, schemas.WalletResults]:
        answers = wallets.open_wallets(context, [
            wallets.WalletOpening(
                wallet_id=item.wallet_id, operator_code=principal.institution_code,
                evidence=evidence_of(item.evidence), zone=item.zone,
                wallet_class=item.wallet_class, holder_kind=item.holder_kind,
                merchant_category_code=item.merchant_category_code,
                reverse_waterfall=item.reverse_waterfall, public_key_hex=item.public_key,
            ) for item in body.wallets])
        results, opened = item_results(answers, schemas.WalletResult, "wallet", wallet_out)
        return 200, schemas.WalletResults(opened=opened, refused=len(results) - opened,
                                          results=results)

    return run_idempotent(request, context, principal, idempotency_key, body, open_all)


@router.get("/{wallet_id}", response_model=schemas.Wallet, responses=WALLET,
            summary="Balance, limits, usage and limits left today")
def get_wallet(wallet: OwnedWallet) -> schemas.Wallet:
    return wallet_out(wallet)


@router.put("/{wallet_id}/class", response_model=schemas.Wallet, responses=WALLET_BODY,
            summary="Upgrade or downgrade the wallet's class")
def change_class(
    wallet: OwnedWallet, body: schemas.ClassChange, context: Ledger
) -> schemas.Wallet:
    evidence = None if body.evidence is None else evidence_of(body.evidence)
    return wallet_out(wallets.change_class(
        context, wallet.wallet_id, body.wallet_class, evidence=evidence,
        reverse_waterfall=body.reverse_waterfall,
    ))


@router.put("/{wallet_id}/reverse-waterfall", response_model=schemas.Wallet,
            responses=WALLET_BODY, summary="The holder opts in or out of the reverse waterfall")
def set_reverse_waterfall(
    wallet: OwnedWallet, body: schemas.ReverseWaterfall, context: Ledger
) -> schemas.Wallet:
    return wallet_out(wallets.set_reverse_waterfall(context, wallet.wallet_id, body.enabled))


@router.post("/{wallet_id}/freeze", response_model=schemas.Wallet, responses=WALLET,
             summary="Stop the wallet paying and receiving")
def freeze(wallet: OwnedWallet, context: Ledger) -> schemas.Wallet:
    return wallet_out(wallets.freeze(context, wallet.wallet_id))


@router.post("/{wallet_id}/unfreeze", response_model=schemas.Wallet, responses=WALLET,
             summary="Let a frozen wallet pay and receive again")
def unfreeze(wallet: OwnedWallet, context: Ledger) -> schemas.Wallet:
    return wallet_out(wallets.unfreeze(context, wallet.wallet_id))


@router.post("/{wallet_id}/close", response_model=schemas.Wallet, responses=WALLET,
             summary="Close an empty wallet for good")
def close(wallet: OwnedWallet, context: Ledger) -> schemas.Wallet:
    return wallet_out(wallets.close_wallet(context, wallet.wallet_id))


@router.post("/{wallet_id}/sub-wallets", status_code=201, response_model=schemas.Wallet,
             responses=WALLET_BODY, summary="Authorise a sub-wallet with its own caps")
def authorise_sub_wallet(
    wallet: OwnedWallet, body: schemas.SubWalletCreate, context: Ledger
) -> schemas.Wallet:
    caps = Limits(**body.caps.model_dump())
    return wallet_out(wallets.authorise_sub_wallet(context, wallet.wallet_id,
                                                   body.sub_wallet_id, caps))


@router.post("/{wallet_id}/sub-wallets/{sub_wallet_id}/close",
             response_model=schemas.SubWalletClosed, responses=WALLET_MONEY,
             summary="Close a sub-wallet, sweeping what it holds back to the parent")
def close_sub_wallet(
    wallet: OwnedWallet,
    sub_wallet_id: WalletIdPath,
    body: schemas.SubWalletClose,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def close() -> tuple[int, schemas.SubWalletClosed]:
        closed = wallets.close_sub_wallet(context, body.entry_id, wallet.wallet_id,
                                          sub_wallet_id)
        return 200, schemas.SubWalletClosed(
            wallet=wallet_out(closed.wallet),
            swept_entry_id=None if closed.swept is None else closed.swept.entry_id,
            swept_entry_seq=None if closed.swept is None else closed.swept.seq,
        )

    return run_idempotent(request, context, principal, idempotency_key, body, close)


@router.post("/{wallet_id}/top-ups", status_code=201, response_model=Entry,
             responses=WALLET_MONEY, summary="Credit the wallet from the operator's float")
def top_up(
    wallet: OwnedWallet,
    body: schemas.Funding,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, entry_out(
            funding.top_up(context, body.entry_id, wallet.wallet_id, body.amount_fen)
        )),
    )


@router.post("/{wallet_id}/withdrawals", status_code=201, response_model=Entry,
             responses=WALLET_MONEY, summary="Return e-CNY from the wallet to the bank")
def withdraw(
    wallet: OwnedWallet,
    body: schemas.Funding,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, entry_out(
            funding.withdraw(context, body.entry_id, wallet.wallet_id, body.amount_fen)
        )),
    )


@funding_router.post("/top-ups/batch", response_model=schemas.FundingResults,
                     responses=problems(*AUTHENTICATED, *MOVES_MONEY),
                     summary="Top up to 1,000 of the operator's wallets, in order, in one unit "
                             "of work")
def top_ups(
    body: schemas.FundingBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each item is answered as `POST /v1/wallets/{id}/top-ups` would have answered it had the
    ones before it been sent one by one: another operator's wallet is `wallet_not_found`."""
    move = partial(funding.top_ups, context, operator_code=principal.institution_code)
    return run_idempotent(request, context, principal, idempotency_key, body,
                          lambda: _funded(body, move))


@funding_router.post("/withdrawals/batch", response_model=schemas.FundingResults,
                     responses=problems(*AUTHENTICATED, *MOVES_MONEY),
                     summary="Withdraw from up to 1,000 of the operator's wallets, in order, in "
                             "one unit of work")
def withdrawals(
    body: schemas.FundingBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each item is answered as `POST /v1/wallets/{id}/withdrawals` would have answered it had
    the ones before it been sent one by one."""
    move = partial(funding.withdrawals, context, operator_code=principal.institution_code)
    return run_idempotent(request, context, principal, idempotency_key, body,
                          lambda: _funded(body, move))


def _funded(
    body: schemas.FundingBatch,
    move: Callable[[list[funding.Funding]], list[funding.FundingResult]],
) -> tuple[int, schemas.FundingResults]:
    answers = move([funding.Funding(item.entry_id, item.wallet_id, item.amount_fen)
                    for item in body.items])
    results, posted = item_results(answers, schemas.FundingResult, "entry", entry_out)
    return 200, schemas.FundingResults(posted=posted, refused=len(results) - posted,
                                       results=results)


@router.post("/{wallet_id}/keys", status_code=201, response_model=schemas.WalletKey,
             responses=WALLET_BODY, summary="Enrol an Ed25519 public key for the wallet")
def enrol_key(
    wallet: OwnedWallet, body: schemas.KeyEnrol, context: Ledger
) -> schemas.WalletKey:
    return key_out(keys.enrol_key(context, wallet.wallet_id, body.public_key))


@router.get("/{wallet_id}/keys", response_model=schemas.WalletKeys, responses=WALLET,
            summary="The wallet's keys, active and revoked")
def list_keys(wallet: OwnedWallet, context: Ledger) -> schemas.WalletKeys:
    return schemas.WalletKeys(keys=[key_out(k) for k in keys.list_keys(context,
                                                                        wallet.wallet_id)])


@router.post("/{wallet_id}/keys/{public_key}/revoke", response_model=schemas.WalletKey,
             responses=WALLET, summary="Revoke one of the wallet's keys for good")
def revoke_key(
    wallet: OwnedWallet, public_key: PublicKeyPath, context: Ledger
) -> schemas.WalletKey:
    if keys.get_key(context, public_key).wallet_id != wallet.wallet_id:
        raise NotFound("no such public key", code="public_key_not_found")
    return key_out(keys.revoke_key(context, public_key))


@router.get("/{wallet_id}/history", response_model=schemas.History, responses=WALLET,
            summary="The wallet's entries, newest first, a page at a time")
def history(
    wallet: OwnedWallet,
    context: Ledger,
    before_seq: Annotated[int | None, Query(ge=1, le=2**53 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=lookups.HISTORY_PAGE_MAX)] = 50,
) -> schemas.History:
    page = lookups.wallet_history(context, wallet.wallet_id, before_seq=before_seq, limit=limit)
    return schemas.History(
        wallet_id=page.wallet_id,
        items=[
            schemas.HistoryItem(
                entry_seq=item.entry_seq, entry_id=item.entry_id, kind=item.kind,
                amount_fen=item.amount_fen, created_at=format_timestamp(item.created_at),
                metadata=item.metadata,
            )
            for item in page.items
        ],
        next_before_seq=page.next_before_seq,
    )
