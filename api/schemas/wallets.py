"""Operators' wallet management, keys, funding and history."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from api.schemas.central_bank import Entry
from api.schemas.common import (
    AmountFen,
    EntityId,
    RequestModel,
    ResponseModel,
    StrictBool,
    StrictInt,
    StrictStr,
    Timestamp,
    examples,
)

WalletClass = Annotated[StrictInt, Field(ge=1, le=4, description="Wallet class 1-4.")]
ZoneCode = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
#: A batch route takes at most this many items.
BATCH_SIZE_MAX = 1_000
PublicKeyHex = Annotated[
    StrictStr, Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, 64 hex chars.")
]
CapFen = Annotated[StrictInt, Field(ge=0, le=2**53 - 1)]


class Evidence(RequestModel):
    """What the operator verified about the holder (it keeps salted hashes only)."""

    phone: Annotated[StrictStr, Field(
        min_length=1, max_length=32, pattern=r"^[0-9+ ()-]+$",
        description="6-15 digits, optionally after '+'; spaces, dashes and brackets are "
                    "ignored. Otherwise 400 identity_evidence_invalid.")]
    id_document: Annotated[StrictStr, Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 -]+$")] | None = Field(
        None, description="4-32 letters or digits, nothing else (no spaces or dashes). "
                          "Otherwise 400 identity_evidence_invalid.")
    bank_account: Annotated[StrictStr, Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 -]+$")] | None = Field(
        None, description="6-34 letters or digits; spaces are ignored. Otherwise 400 "
                          "identity_evidence_invalid.")
    in_person: StrictBool = False


class WalletOpen(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({
        "wallet_id": "w-7f3a9c", "zone": "shenzhen", "wallet_class": 4,
        "holder_kind": "personal", "evidence": {"phone": "+86 138 0013 8000"},
    }))

    wallet_id: EntityId
    zone: ZoneCode
    evidence: Evidence
    wallet_class: WalletClass = 4
    holder_kind: Literal["personal", "corporate"] = "personal"
    merchant_category_code: Annotated[StrictStr, Field(pattern=r"^[0-9]{4}$")] | None = None
    reverse_waterfall: StrictBool = False


class WalletOpening(WalletOpen):
    """A wallet to open in a batch, with the first key to enrol on it (optional)."""

    public_key: PublicKeyHex | None = None


class WalletBatch(RequestModel):
    """Wallets for the calling operator, opened in this order in one unit of work."""

    model_config = ConfigDict(json_schema_extra=examples({"wallets": [{
        "wallet_id": "w-7f3a9c", "zone": "shenzhen", "wallet_class": 4,
        "holder_kind": "personal", "evidence": {"phone": "+86 138 0013 8000"},
        "public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    }]}))

    wallets: Annotated[list[WalletOpening], Field(min_length=1, max_length=BATCH_SIZE_MAX)]


class ClassChange(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({
        "wallet_class": 2,
        "evidence": {"phone": "+86 138 0013 8000", "id_document": "110101199003074518",
                     "bank_account": "6222020200112233445"},
        "reverse_waterfall": True,
    }))

    wallet_class: WalletClass
    evidence: Evidence | None = None
    reverse_waterfall: StrictBool | None = None


class ReverseWaterfall(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({"enabled": True}))

    enabled: StrictBool


class Caps(RequestModel):
    """A sub-wallet's own caps in fen, each at most the parent's (``null``: no cap, which only
    a parent without that cap allows)."""

    balance_fen_max: CapFen | None = None
    payment_fen_max: CapFen | None = None
    daily_outgoing_fen_max: CapFen | None = None
    annual_outgoing_fen_max: CapFen | None = None


class SubWalletCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({
        "sub_wallet_id": "w-7f3a9c.till-1",
        "caps": {"balance_fen_max": 100_000, "payment_fen_max": 20_000,
                 "daily_outgoing_fen_max": 50_000, "annual_outgoing_fen_max": 1_000_000},
    }))

    sub_wallet_id: EntityId
    caps: Caps


class SubWalletClose(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples({"entry_id": "sweep-till-1"}))

    entry_id: EntityId


class Funding(RequestModel):
    """A top-up (operator float -> wallet) or a withdrawal (wallet -> operator float)."""

    model_config = ConfigDict(json_schema_extra=examples(
        {"entry_id": "topup-2026-03-02-0001", "amount_fen": 50_000}
    ))

    entry_id: EntityId
    amount_fen: AmountFen


class FundingItem(Funding):
    """A top-up or withdrawal of one of the calling operator's wallets, in a batch."""

    model_config = ConfigDict(json_schema_extra=examples(
        {"wallet_id": "w-7f3a9c", "entry_id": "topup-2026-03-02-0001", "amount_fen": 50_000}
    ))

    wallet_id: EntityId


class FundingBatch(RequestModel):
    """Top-ups (or withdrawals), posted in this order in one unit of work."""

    model_config = ConfigDict(json_schema_extra=examples({"items": [
        {"wallet_id": "w-7f3a9c", "entry_id": "topup-2026-03-02-0001", "amount_fen": 50_000},
    ]}))

    items: Annotated[list[FundingItem], Field(min_length=1, max_length=BATCH_SIZE_MAX)]


class KeyEnrol(RequestModel):
    model_config = ConfigDict(json_schema_extra=examples(
        {"public_key": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"}
    ))

    public_key: PublicKeyHex


class LimitsOut(ResponseModel):
    balance_fen_max: int | None
    payment_fen_max: int | None
    daily_outgoing_fen_max: int | None
    annual_outgoing_fen_max: int | None


class UsageOut(ResponseModel):
    day: str = Field(description="The Asia/Shanghai calendar day the counter is for.")
    spent_day_fen: int
    year: int
    spent_year_fen: int


class LimitsLeftOut(ResponseModel):
    daily_outgoing_left_fen: int | None
    annual_outgoing_left_fen: int | None
    balance_room_fen: int | None
    payable_now_fen: int


class Wallet(ResponseModel):
    wallet_id: str
    operator: str
    holder_kind: str
    merchant_category_code: str | None
    wallet_class: int
    zone: str
    status: str
    parent_wallet_id: str | None
    caps: LimitsOut
    limits: LimitsOut
    bank_account_linked: bool
    reverse_waterfall: bool
    balance_fen: int
    usage: UsageOut
    limits_left: LimitsLeftOut


class SubWalletClosed(ResponseModel):
    wallet: Wallet
    swept_entry_id: str | None
    swept_entry_seq: int | None


class WalletKey(ResponseModel):
    public_key: str
    wallet_id: str
    status: str
    last_sequence: int
    enrolled_at: Timestamp
    revoked_at: Timestamp | None


class WalletKeys(ResponseModel):
    keys: list[WalletKey]


class HistoryItem(ResponseModel):
    entry_seq: int
    entry_id: str
    kind: str
    amount_fen: int = Field(description="Positive: in; negative: out.")
    created_at: Timestamp
    metadata: dict[str, object]


class History(ResponseModel):
    wallet_id: str
    items: list[HistoryItem]
    next_before_seq: int | None = Field(
        description="Pass as `before_seq` for the next, older page; null on the last page."
    )


class WalletResult(ResponseModel):
    index: int
    status: int = Field(description="201 opened (or already open for this holder), or the "
                                    "status of the problem.")
    wallet: Wallet | None = None
    problem: dict[str, object] | None = None


class WalletResults(ResponseModel):
    opened: int
    refused: int
    results: list[WalletResult]


class FundingResult(ResponseModel):
    index: int
    status: int = Field(description="201 posted, or the status of the problem.")
    entry: Entry | None = None
    problem: dict[str, object] | None = None


class FundingResults(ResponseModel):
    posted: int
    refused: int
    results: list[FundingResult]
