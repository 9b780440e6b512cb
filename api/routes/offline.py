"""Offline devices: provisioning and certificates, loads, unloads, uploads of offline payments,
the revocation list, fraud cases and the offline reconciliation report.

A device belongs to the operator that certified it; another operator's device is exactly as
'not found' as one that does not exist. Unloads and offline payments are authorised by the
device's signature, which the services verify.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from api.auth import Caller, Ledger, Operator, OwnedWallet
from api.docs import AUTHENTICATED, MOVES_MONEY, WITH_BODY, problems
from api.idempotency import IdempotencyKey, run_idempotent
from api.json_body import StrictJsonRoute
from api.schemas import offline as schemas
from api.schemas.payments import SignedEnvelope
from cbdc.domain.postings import format_timestamp
from cbdc.services import lookups, offline
from cbdc.services.apikeys import Principal
from cbdc.services.context import LedgerContext
from cbdc.storage.offline import device_not_found

router = APIRouter(prefix="/v1", tags=["offline"], route_class=StrictJsonRoute)
DEVICE_MONEY = problems(*AUTHENTICATED, *MOVES_MONEY, 404)
DeviceIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,60}$", examples=["card-0001"])]


def owned_device(device_id: DeviceIdPath, principal: Operator, context: Ledger) -> str:
    if lookups.device_operator(context, device_id) != principal.institution_code:
        raise device_not_found(device_id)
    return device_id


OwnedDevice = Annotated[str, Depends(owned_device)]


@router.post("/wallets/{wallet_id}/devices", status_code=201,
             response_model=schemas.ProvisionedDevice,
             responses=problems(*AUTHENTICATED, *WITH_BODY, 404, 409),
             summary="Certify a hardware wallet's key for this wallet; open its escrow")
def provision_device(
    wallet: OwnedWallet, body: schemas.DeviceProvision, context: Ledger
) -> schemas.ProvisionedDevice:
    provisioned = offline.provision_device(context, body.device_id, wallet.wallet_id,
                                           body.public_key)
    return schemas.ProvisionedDevice(
        certificate=provisioned.certificate,
        operator_certificate=provisioned.operator_certificate,
        root_public_key=provisioned.root_public_key.hex(),
    )


@router.post("/devices/{device_id}/loads", status_code=201, response_model=schemas.LoadReceipt,
             responses=DEVICE_MONEY,
             summary="Move value from the wallet into the device's escrow; the load receipt")
def load(
    device_id: OwnedDevice,
    body: schemas.DeviceLoad,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    return run_idempotent(
        request, context, principal, idempotency_key, body,
        lambda: (201, schemas.LoadReceipt.model_validate(
            offline.load_device(context, body.load_id, device_id, body.amount_fen)
        )),
    )


@router.post("/devices/{device_id}/unloads", status_code=201,
             response_model=schemas.UnloadResult, responses=DEVICE_MONEY,
             summary="Accept a device-signed unload statement; return the balance to the wallet")
def unload(
    device_id: OwnedDevice,
    body: SignedEnvelope,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def accept() -> tuple[int, schemas.UnloadResult]:
        result = offline.unload_device(context, body.model_dump())
        return 201, schemas.UnloadResult(
            device_id=result.device_id, unload_counter=result.unload_counter,
            amount_fen=result.amount_fen, returned_fen=result.returned_fen,
            swept_fen=result.swept_fen,
        )

    return run_idempotent(request, context, principal, idempotency_key, body, accept)


@router.post("/devices/{device_id}/uploads", response_model=schemas.UploadReport,
             responses=DEVICE_MONEY,
             summary="Upload offline payments the device made or received; settle them")
def upload(
    device_id: OwnedDevice,
    body: schemas.OfflineUpload,
    request: Request,
    context: Ledger,
    principal: Operator,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    def settle() -> tuple[int, schemas.UploadReport]:
        report = offline.upload_offline_payments(
            context, [item.model_dump() for item in body.payments],
            uploaded_by_device_id=device_id,
        )
        return 200, schemas.UploadReport(
            outcomes=[schemas.UploadOutcome(
                index=o.index, status=o.status, code=o.code, payment_hash=o.payment_hash,
                payer_device=o.payer_device, duplicate=o.duplicate,
            ) for o in report.outcomes],
            revoked=list(report.revoked), sync_receipt=report.sync_receipt,
            revocation_list=report.revocation_list,
        )

    return run_idempotent(request, context, principal, idempotency_key, body, settle)


@router.get("/offline/revocation-list", response_model=dict[str, Any],
            responses=problems(*AUTHENTICATED),
            summary="The latest revocation list, signed by the central bank's root key")
def revocation_list(context: Ledger, _: Caller) -> dict[str, Any]:
    return offline.revocation_list(context)


@router.get("/offline/fraud-cases", response_model=schemas.FraudCases,
            responses=problems(*AUTHENTICATED),
            summary="Fraud cases: all (central bank) or the caller's devices' (operator)")
def fraud_cases(context: Ledger, principal: Caller) -> schemas.FraudCases:
    operator = None if principal.is_central_bank else principal.institution_code
    return schemas.FraudCases(cases=[
        schemas.FraudCase(
            device_id=case.device_id, wallet_id=case.wallet_id, operator=case.operator_code,
            code=case.code, counters=list(case.counters),
            payment_hashes=list(case.payment_hashes), amount_fen=case.amount_fen,
            detail=case.detail, opened_at=format_timestamp(case.opened_at),
            updated_at=format_timestamp(case.updated_at),
        )
        for case in offline.fraud_cases(context, operator)
    ])


@router.get("/offline/report", response_model=schemas.OfflineReport,
            responses=problems(*AUTHENTICATED),
            summary="Offline reconciliation: all (central bank) or the caller's (operator)")
def offline_report(
    context: Ledger,
    principal: Caller,
    stale_after_hours: Annotated[int, Query(ge=1, le=24 * 365)] = 72,
) -> schemas.OfflineReport:
    return _report_out(context, principal, timedelta(hours=stale_after_hours))


def _report_out(
    context: LedgerContext, principal: Principal, stale_after: timedelta
) -> schemas.OfflineReport:
    report = offline.offline_report(context, stale_after=stale_after)
    mine = None if principal.is_central_bank else principal.institution_code
    devices = [d for d in report.devices if mine in (None, d.operator_code)]
    return schemas.OfflineReport(
        at=format_timestamp(report.at),
        devices=[schemas.DeviceReconciliation(
            device_id=d.device_id, operator=d.operator_code, wallet_id=d.wallet_id,
            status=d.status, loaded_fen=d.loaded_fen, settled_fen=d.settled_fen,
            unloaded_fen=d.unloaded_fen, operator_paid_fen=d.operator_paid_fen,
            escrow_fen=d.escrow_fen, expected_escrow_fen=d.expected_escrow_fen,
            balanced=d.balanced, last_online_at=format_timestamp(d.last_online_at),
            stale=d.stale,
        ) for d in devices],
        operators=[schemas.OperatorOffline(
            code=o.code, devices=o.devices, outstanding_fen=o.outstanding_fen,
            pending=[schemas.PendingBucket(age=b.age, payments=b.payments,
                                           amount_fen=b.amount_fen) for b in o.pending],
            pending_fen=o.pending_fen,
            oldest_pending_seconds=None if o.oldest_pending is None
            else int(o.oldest_pending.total_seconds()),
            fraud_cases=o.fraud_cases, losses_fen=o.losses_fen,
            stale_devices=list(o.stale_devices),
        ) for o in report.operators if mine in (None, o.code)],
        ok=all(d.balanced for d in devices),
    )
