"""Payments, batches of them, merchant payment requests, captures and refunds.

Money moves here only on a wallet's Ed25519 signature, which the services verify; the bearer
key says which operator relays the message (and owns the idempotency record), nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.auth import Ledger, Operator
from api.batches import item_results
from api.docs import AUTHENTICATED, MOVES_MONEY, WITH_BODY, problems
from api.idempotency import IdempotencyKey, run_idempotent
from api.json_body import StrictJsonRoute
from api.schemas import payments as schemas
from cbdc.domain.errors import NotFound
from cbdc.domain.postings import format_timestamp
from cbdc.services import lookups, merchants, payments
from cbdc.services.context import LedgerContext

router = APIRouter(prefix="/v1", tags=["payments"], route_class=StrictJsonRoute)
IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
MONEY = problems(*AUTHENTICATED, *MOVES_MONEY, 404)


def settlement_out(settled: payments.Settlement) -> schemas.Settlement:
    return schemas.Settlement(
        payment_id=settled.payment_id, kind=settled.kind, payer=settled.payer,
        payee=settled.payee, amount_fen=settled.amount_fen, entry_seq=settled.entry_seq,
        entry_hash=settled.entry_hash, settled_at=format_timestamp(settled.settled_at),
        topped_up_fen=settled.topped_up_fen, swept_fen=settled.swept_fen,
        receipt=dict(settled.receipt), replayed=settled.replayed,
    )


def envelope(body: schemas.SignedEnvelope) -> dict[str, Any]:
    return body.model_dump()


@router.get("/ledger", response_model=schemas.LedgerInfo, responses=problems(),
            tags=["health"], summary="This ledger's id and receipt-signing public key")
def ledger_info(context: Ledger) -> schemas.LedgerInfo:
    return schemas.LedgerInfo(ledger_id=context.ledger_id,
                              receipt_public_key=payments.ledger_public_key_hex(context))


@router.post("/payments", status_code=201, response_model=schemas.Settlement, responses=MONEY,
             summary="Settle one signed payment")
def submit_payment(
    body: schemas.SignedEnvelope,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, settlement_out(payments.settle_payment(context, envelope(body)))),
    )


@router.post("/payments/batch", response_model=schemas.BatchResults, responses=MONEY,
             summary="Settle up to 1,000 signed payments in one unit of work")
def submit_batch(
    body: schemas.PaymentBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    commands = [envelope(item) for item in body.payments]
    return run_idempotent(request, context, principal, idempotency_key, body,
                          lambda: _settled_batch(context, commands))


def _settled_batch(
    context: LedgerContext, commands: Sequence[payments.Command]
) -> tuple[int, schemas.BatchResults]:
    results, settled = item_results(payments.settle_batch(context, commands),
                                    schemas.BatchResult, "settlement", settlement_out)
    return 200, schemas.BatchResults(settled=settled, refused=len(results) - settled,
                                     results=results)


@router.post("/settlements/batch", response_model=schemas.BatchResults, responses=MONEY,
             summary="Settle up to 1,000 signed payments, captures and refunds, in order, "
                     "in one unit of work")
def submit_settlements(
    body: schemas.SettlementBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each item is answered as its own route (`/payments`, `/captures`, `/refunds`) would have
    answered it had the items before it been sent one by one: a refund may name a payment or
    capture settled earlier in the same batch."""
    commands = [_command(item) for item in body.items]
    return run_idempotent(request, context, principal, idempotency_key, body,
                          lambda: _settled_batch(context, commands))


def _command(item: schemas.PaymentItem | schemas.CaptureItem | schemas.RefundItem,
             ) -> payments.Command:
    if isinstance(item, schemas.CaptureItem):
        return payments.CodeCapture(envelope(item.payment_code), envelope(item.capture))
    if isinstance(item, schemas.RefundItem):
        return payments.MerchantRefund(envelope(item.refund))
    return envelope(item.payment)


@router.get("/payments/{payment_id}", response_model=schemas.Settlement,
            responses=problems(*AUTHENTICATED, 404),
            summary="A settlement and its receipt (to the payer's or payee's operator)")
def get_payment(payment_id: IdPath, context: Ledger, principal: Operator) -> schemas.Settlement:
    found = lookups.find_settlement(context, payment_id)
    if principal.institution_code not in found.operator_codes:
        raise NotFound(f"no settlement {payment_id!r}", code="payment_not_found")
    return settlement_out(found.settlement)


@router.post("/payment-requests", status_code=201, response_model=schemas.PaymentRequest,
             responses=problems(*AUTHENTICATED, *WITH_BODY, 404, 409),
             summary="Record a merchant-signed payment request; get its QR payload")
def create_payment_request(
    body: schemas.SignedEnvelope, context: Ledger, _: Operator
) -> schemas.PaymentRequest:
    return request_out(merchants.create_payment_request(context, envelope(body)))


@router.post("/payment-requests/batch", response_model=schemas.PaymentRequestResults,
             responses=problems(*AUTHENTICATED, *MOVES_MONEY),
             summary="Record up to 1,000 merchant-signed payment requests, in order, in one "
                     "unit of work")
def create_payment_requests(
    body: schemas.PaymentRequestBatch,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Each request is answered as `POST /v1/payment-requests` would have answered it had the
    ones before it been sent one by one."""
    def record() -> tuple[int, schemas.PaymentRequestResults]:
        answers = merchants.create_payment_requests(
            context, [envelope(item) for item in body.requests])
        results, created = item_results(answers, schemas.PaymentRequestResult,
                                        "payment_request", request_out)
        return 200, schemas.PaymentRequestResults(created=created, refused=len(results) - created,
                                                  results=results)

    return run_idempotent(request, context, principal, idempotency_key, body, record)


@router.get("/payment-requests/{request_id}", response_model=schemas.PaymentRequest,
            responses=problems(*AUTHENTICATED, 404), summary="A payment request and its status")
def get_payment_request(
    request_id: IdPath, context: Ledger, _: Operator
) -> schemas.PaymentRequest:
    return request_out(merchants.get_payment_request(context, request_id))


def request_out(found: merchants.PaymentRequest) -> schemas.PaymentRequest:
    return schemas.PaymentRequest(
        request_id=found.request_id, merchant=found.merchant, amount_fen=found.amount_fen,
        reference=found.reference, expires_at=format_timestamp(found.expires_at),
        status=found.status, envelope=dict(found.envelope), qr=found.qr,
    )


@router.post("/captures", status_code=201, response_model=schemas.Settlement, responses=MONEY,
             summary="The merchant captures a customer's payment code")
def capture(
    body: schemas.Capture,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, settlement_out(merchants.capture_payment_code(
            context, envelope(body.payment_code), envelope(body.capture)
        ))),
    )


@router.post("/refunds", status_code=201, response_model=schemas.Settlement, responses=MONEY,
             summary="Settle a merchant-signed refund of (part of) a payment or capture")
def refund(
    body: schemas.SignedEnvelope,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, settlement_out(merchants.refund(context, envelope(body)))),
    )
