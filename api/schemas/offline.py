"""Offline devices: provisioning, loads, unloads, uploads, revocation list, fraud cases."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field

from api.schemas.common import (
    AmountFen,
    EntityId,
    RequestModel,
    ResponseModel,
    StrictStr,
    Timestamp,
    examples,
)

UPLOAD_SIZE_MAX = 1_000
DeviceId = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,60}$")]


class DeviceProvision(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({
        "device_id": "card-0001",
        "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    }))

    device_id: DeviceId
    public_key: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class DeviceLoad(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples(
        {"load_id": "load-card-0001-1", "amount_fen": 30_000}
    ))

    load_id: EntityId
    amount_fen: AmountFen


class OfflinePayment(RequestModel):
    """A device-signed offline payment with the payer's certificate chain alongside
    (docs/offline-protocol.md); the service checks everything inside."""

    message: dict[str, Any]
    signature: Annotated[StrictStr, Field(max_length=256)]
    certificate: dict[str, Any]
    operator_certificate: dict[str, Any]


class OfflineUpload(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({"payments": [{
        "message": {"version": 1, "domain": "cbdc/v1/offline-payment"}, "signature": "0" * 128,
        "certificate": {"message": {}, "signature": "0" * 128},
        "operator_certificate": {"message": {}, "signature": "0" * 128},
    }]}))

    payments: Annotated[list[OfflinePayment], Field(min_length=1, max_length=UPLOAD_SIZE_MAX)]


class ProvisionedDevice(ResponseModel):
    certificate: dict[str, Any]
    operator_certificate: dict[str, Any]
    root_public_key: str


class LoadReceipt(ResponseModel):
    """The operator-signed load receipt the device verifies before raising its balance."""

    message: dict[str, Any]
    signature: str


class UnloadResult(ResponseModel):
    device_id: str
    unload_counter: int
    amount_fen: int
    returned_fen: int
    swept_fen: int


class UploadOutcome(ResponseModel):
    index: int
    status: str
    code: str | None
    payment_hash: str | None
    payer_device: str | None
    duplicate: bool


class UploadReport(ResponseModel):
    outcomes: list[UploadOutcome]
    revoked: list[str]
    sync_receipt: dict[str, Any]
    revocation_list: dict[str, Any] | None


class FraudCase(ResponseModel):
    device_id: str
    wallet_id: str
    operator: str
    code: str
    counters: list[int]
    payment_hashes: list[str]
    amount_fen: int
    detail: str
    opened_at: Timestamp
    updated_at: Timestamp


class FraudCases(ResponseModel):
    cases: list[FraudCase]


class DeviceReconciliation(ResponseModel):
    device_id: str
    operator: str
    wallet_id: str
    status: str
    loaded_fen: int
    settled_fen: int
    unloaded_fen: int
    operator_paid_fen: int
    escrow_fen: int
    expected_escrow_fen: int
    balanced: bool
    last_online_at: Timestamp
    stale: bool


class PendingBucket(ResponseModel):
    age: str
    payments: int
    amount_fen: int


class OperatorOffline(ResponseModel):
    code: str
    devices: int
    outstanding_fen: int
    pending: list[PendingBucket]
    pending_fen: int
    oldest_pending_seconds: int | None
    fraud_cases: int
    losses_fen: int
    stale_devices: list[str]


class OfflineReport(ResponseModel):
    at: Timestamp
    devices: list[DeviceReconciliation]
    operators: list[OperatorOffline]
    ok: bool
