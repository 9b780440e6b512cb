"""The HTTP adapter: the driver's commands as requests to a running ``cbdc serve``.

It speaks to the API as a real client would: the central bank's key for the issuance run, the
supply report and the audit; each operator's key for the wallets it serves (opening, keys,
top-ups, withdrawals); signed payments relayed in ``/v1/payments/batch`` calls and captures,
refunds and payment requests one by one. Every money-moving POST carries an ``Idempotency-Key``
(the run's own counter: unique per request of this run). Refusals come back as problem
documents whose ``code`` is the same as in-process.

Operator keys can only be made on the server's database (``cbdc apikey create CODE``, once the
operator is registered), so they are given to the adapter; see docs/simulation.md.

The server's own clock stamps the journal and judges expiries, so :meth:`set_time` does nothing
here and the final state hash (the server's chain head) is not reproducible across runs.

Offline devices go online through the device routes, one request per device, as the device's
own operator: certificates (``/v1/wallets/{id}/devices``), loads
(``/v1/devices/{id}/loads``) and uploads (``/v1/devices/{id}/uploads``); the fraud cases are the
central bank's list (``/v1/offline/fraud-cases``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.client import HTTPConnection, HTTPResponse
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cbdc.domain.errors import ApiUnavailable, CbdcError, Conflict, InvalidRequest
from cbdc.services.issuance_run import Order, Plan, PlannedOperator, RunReport
from cbdc.services.offline import (
    DeviceLoad,
    DeviceRequest,
    ProvisionedDevice,
    Upload,
    UploadOutcome,
    UploadReport,
)
from cbdc.simulation.metrics import SupplySample
from cbdc.simulation.ports import (
    Capture,
    Command,
    OpenWallet,
    Outcome,
    Pay,
    PresentRequest,
    Refund,
    Timed,
    TopUp,
    Verdicts,
    Withdraw,
)

_I = TypeVar("_I")
_A = TypeVar("_A")

#: ``/v1/payments/batch`` takes at most this many payments.
BATCH_SIZE_MAX = 1_000
_STAGE = (OpenWallet, TopUp, PresentRequest)


class HttpLedger:
    """A :class:`~cbdc.simulation.ports.LedgerPort` over HTTP."""

    def __init__(self, url: str, central_bank_key: str, operator_keys: Mapping[str, str],
                 *, timeout_seconds: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidRequest(f"--api must be an http://host:port URL, not {url!r}",
                                 code="api_url_invalid")
        self.base = parts.path.rstrip("/")
        self.connection = HTTPConnection(parts.hostname, parts.port or 80,
                                         timeout=timeout_seconds)
        self.central_bank_key = central_bank_key
        self.operator_keys = dict(operator_keys)
        self.wallet_operator: dict[str, str] = {}
        self.device_operator: dict[str, str] = {}
        self.requests = 0
        self.ledger_id = str(self._call("GET", "/v1/ledger", None)[1]["ledger_id"])

    # -- the port ---------------------------------------------------------------------------

    def set_time(self, moment: Any) -> None:
        """The server keeps its own clock."""

    def ensure_empty(self) -> None:
        total = self._central("GET", "/v1/reports/supply")["total"]
        if total["outstanding_fen"] or total["reserves_fen"]:
            raise Conflict("the simulation needs a ledger with nothing issued yet: serve a "
                           "fresh database", code="ledger_not_empty")

    def run_issuance(self, plan: Plan) -> RunReport:
        body = {
            "run_id": plan.run_id,
            "operators": [_planned(op) for op in plan.operators],
            "orders": [{"operator": order.operator, "zone": order.zone,
                        "amount_fen": order.amount_fen} for order in plan.orders],
        }
        missing = sorted({op.code for op in plan.operators} - set(self.operator_keys))
        if missing:
            raise InvalidRequest(
                f"no API key for operator(s) {', '.join(missing)}: create them with "
                "`cbdc apikey create CODE` on the server and pass --operator-key CODE=KEY",
                code="operator_key_missing")
        answer = self._central("POST", "/v1/issuance-runs", body, money=True)
        orders = {order.number: order for order in plan.orders}
        report = RunReport(
            run_id=answer["run_id"], orders_planned=answer["orders_planned"],
            orders_issued_now=answer["orders_issued_now"],
            orders_already_done=answer["orders_already_done"],
        )
        report.issued_by_operator.update(answer["issued_by_operator"])
        report.issued_by_zone.update(answer["issued_by_zone"])
        for failure in answer["failures"]:
            order = orders.get(failure["order"]) or Order(failure["order"], failure["operator"],
                                                          "", 0)
            report.failures.append(
                (order, CbdcError(failure["detail"], code=failure["code"])))
        return report

    def submit(self, batch: Sequence[Timed]) -> list[Outcome]:
        """The in-process order: what sets the stage, then the signed payments in batch calls,
        then captures, refunds and withdrawals, each in the batch's order."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        for index, timed in enumerate(batch):
            if isinstance(timed.command, _STAGE):
                outcomes[index] = self._one(timed.command)
        paying = [index for index, timed in enumerate(batch) if isinstance(timed.command, Pay)]
        for start in range(0, len(paying), BATCH_SIZE_MAX):
            chunk = paying[start:start + BATCH_SIZE_MAX]
            envelopes = [batch[index].command.payment for index in chunk]  # type: ignore[union-attr]
            for index, outcome in zip(chunk, self._pay(envelopes), strict=True):
                outcomes[index] = outcome
        for index, timed in enumerate(batch):
            if outcomes[index] is None:
                outcomes[index] = self._one(timed.command)
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def supply(self, hour: int) -> SupplySample:
        report = self._central("GET", "/v1/reports/supply")
        operators, total = report["operators"], report["total"]
        return SupplySample(
            hour=hour, outstanding_fen=total["outstanding_fen"],
            reserves_fen=total["reserves_fen"],
            floats_fen=sum(op["float_fen"] for op in operators),
            wallets_fen=sum(op["wallets_fen"] for op in operators),
            escrow_fen=sum(op["escrow_fen"] for op in operators),
        )

    def verdicts(self) -> Verdicts:
        audit = self._central("POST", "/v1/audits")
        supply = self._central("GET", "/v1/reports/supply")
        supply["total"]["wallets_fen"] = sum(op["wallets_fen"] for op in supply["operators"])
        return Verdicts(audit_ok=bool(audit["ok"]), audit=audit,
                        supply_balanced=bool(supply["total"]["balanced"]), supply=supply)

    def final_state_hash(self) -> str:
        """Not the in-process hash (the server's clock stamped the journal): a digest of the
        audit's and supply report's figures, labelled as such."""
        audit = self._central("POST", "/v1/audits")
        supply = self._central("GET", "/v1/reports/supply")
        figures = json.dumps({"audit": audit, "supply": supply}, sort_keys=True)
        return "http:" + hashlib.sha256(figures.encode()).hexdigest()

    def close(self) -> None:
        self.connection.close()

    # -- offline devices (the port's offline half) ------------------------------------------

    @contextmanager
    def offline_session(self) -> Iterator[None]:
        """Each request is its own unit of work on the server: nothing to group."""
        yield

    def provision_devices(
        self, requests: Sequence[DeviceRequest]
    ) -> list[ProvisionedDevice | CbdcError]:
        return _each(requests, self._provision)

    def load_devices(self, loads: Sequence[DeviceLoad]) -> list[dict[str, Any] | CbdcError]:
        return _each(loads, self._load)

    def upload_offline(self, uploads: Sequence[Upload]) -> list[UploadReport | CbdcError]:
        return _each(uploads, self._upload)

    def fraud_devices(self) -> dict[str, int]:
        cases = self._central("GET", "/v1/offline/fraud-cases")["cases"]
        return dict(Counter(case["device_id"] for case in cases))

    def _provision(self, request: DeviceRequest) -> ProvisionedDevice:
        operator = self.wallet_operator.get(request.wallet_id)
        answer = self._operator(
            operator, "POST", f"/v1/wallets/{request.wallet_id}/devices",
            {"device_id": request.device_id, "public_key": request.device_public_key_hex})
        if operator is not None:
            self.device_operator[request.device_id] = operator
        return ProvisionedDevice(certificate=answer["certificate"],
                                 operator_certificate=answer["operator_certificate"],
                                 root_public_key=bytes.fromhex(answer["root_public_key"]))

    def _load(self, load: DeviceLoad) -> dict[str, Any]:
        receipt: dict[str, Any] = self._operator(
            self.device_operator.get(load.device_id), "POST",
            f"/v1/devices/{load.device_id}/loads",
            {"load_id": load.load_id, "amount_fen": load.amount_fen}, money=True)
        return receipt

    def _upload(self, upload: Upload) -> UploadReport:
        device_id = upload.uploaded_by_device_id
        answer = self._operator(
            self.device_operator.get(device_id), "POST", f"/v1/devices/{device_id}/uploads",
            {"payments": [dict(envelope) for envelope in upload.envelopes]}, money=True)
        return UploadReport(
            outcomes=tuple(UploadOutcome(
                index=outcome["index"], status=outcome["status"], code=outcome["code"],
                payment_hash=outcome["payment_hash"], payer_device=outcome["payer_device"],
                duplicate=outcome["duplicate"]) for outcome in answer["outcomes"]),
            revoked=tuple(answer["revoked"]), sync_receipt=answer["sync_receipt"],
            revocation_list=answer["revocation_list"])

    # -- commands -----------------------------------------------------------------------------

    def _one(self, command: Command) -> Outcome:
        try:
            return self._apply(command)
        except _Refused as refused:
            return Outcome.refused(refused.code)

    def _apply(self, command: Command) -> Outcome:
        if isinstance(command, OpenWallet):
            return self._open(command)
        if isinstance(command, TopUp | Withdraw):
            kind = "top-ups" if isinstance(command, TopUp) else "withdrawals"
            answer = self._operator(self.wallet_operator.get(command.wallet_id), "POST",
                                    f"/v1/wallets/{command.wallet_id}/{kind}",
                                    {"entry_id": command.entry_id,
                                     "amount_fen": command.amount_fen}, money=True)
            return Outcome(ok=True, replayed=bool(answer["replayed"]))
        if isinstance(command, PresentRequest):
            self._operator(None, "POST", "/v1/payment-requests", dict(command.request))
            return Outcome(ok=True)
        if isinstance(command, Capture):
            return _settled(self._operator(None, "POST", "/v1/captures", {
                "payment_code": dict(command.code), "capture": dict(command.capture),
            }, money=True))
        if isinstance(command, Refund):
            return _settled(self._operator(None, "POST", "/v1/refunds", dict(command.refund),
                                           money=True))
        if isinstance(command, Pay):
            return self._pay([command.payment])[0]
        raise AssertionError(f"unknown command {command!r}")

    def _open(self, command: OpenWallet) -> Outcome:
        holder = command.holder
        evidence: dict[str, Any] = {"phone": holder.phone, "in_person": holder.in_person}
        if holder.id_document is not None:
            evidence["id_document"] = holder.id_document
        if holder.bank_account is not None:
            evidence["bank_account"] = holder.bank_account
        body: dict[str, Any] = {
            "wallet_id": command.wallet_id, "zone": command.zone, "evidence": evidence,
            "wallet_class": command.wallet_class,
            "holder_kind": "corporate" if command.merchant_category_code else "personal",
        }
        if command.merchant_category_code is not None:
            body["merchant_category_code"] = command.merchant_category_code
        self._operator(command.operator_code, "POST", "/v1/wallets", body)
        self.wallet_operator[command.wallet_id] = command.operator_code
        self._operator(command.operator_code, "POST", f"/v1/wallets/{command.wallet_id}/keys",
                       {"public_key": command.public_key_hex})
        return Outcome(ok=True)

    def _pay(self, envelopes: Sequence[Any]) -> list[Outcome]:
        try:
            answer = self._operator(None, "POST", "/v1/payments/batch",
                                    {"payments": [dict(envelope) for envelope in envelopes]},
                                    money=True)
        except _Refused as refused:  # the whole batch refused (its shape): each payment too
            return [Outcome.refused(refused.code)] * len(envelopes)
        return [_settled(result["settlement"]) if result["settlement"] is not None
                else Outcome.refused(str(result["problem"]["code"]))
                for result in answer["results"]]

    # -- HTTP -----------------------------------------------------------------------------

    def _central(self, method: str, path: str, body: Any = None, *,
                 money: bool = False) -> Any:
        return self._checked(method, path, body, self.central_bank_key, money)

    def _operator(self, code: str | None, method: str, path: str, body: Any, *,
                  money: bool = False) -> Any:
        """As ``code``'s operator (a wallet's own operator), or as any operator when relaying
        what the wallet signed (captures, refunds, payments, payment requests)."""
        key = self.operator_keys[code] if code is not None else next(
            iter(self.operator_keys.values()))
        return self._checked(method, path, body, key, money)

    def _checked(self, method: str, path: str, body: Any, key: str, money: bool) -> Any:
        headers = {"Authorization": f"Bearer {key}"}
        if money:
            self.requests += 1
            headers["Idempotency-Key"] = f"sim-{self.ledger_id}-{self.requests}"
        status, answer = self._call(method, path, body, headers)
        if status >= 500:
            raise ApiUnavailable(f"{method} {path} answered {status}: {answer}")
        if status >= 400:
            code = answer.get("code") if isinstance(answer, dict) else None
            if status in (401, 403) or code is None:
                raise ApiUnavailable(f"{method} {path} answered {status}: {answer}",
                                     code=str(code or "api_unavailable"))
            raise _Refused(str(code))
        return answer

    def _call(self, method: str, path: str, body: Any,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        all_headers = {"Accept": "application/json", **(headers or {})}
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, self.base + path, body=payload, headers=all_headers)
            response: HTTPResponse = self.connection.getresponse()
            raw = response.read()
        except OSError as error:
            self.connection.close()
            raise ApiUnavailable(f"{method} {path}: {error}") from error
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError as error:
            raise ApiUnavailable(f"{method} {path} answered {response.status} with "
                                 "something other than JSON") from error


class _Refused(Exception):
    """A problem document with a domain ``code``: the command was refused, nothing moved."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _each(items: Sequence[_I], call: Callable[[_I], _A]) -> list[_A | CbdcError]:
    """``call`` on each item in turn; a refusal in its place, as the batch services answer."""
    answers: list[_A | CbdcError] = []
    for item in items:
        try:
            answers.append(call(item))
        except _Refused as refused:
            answers.append(CbdcError(f"the server refused it: {refused.code}",
                                     code=refused.code))
    return answers


def _planned(operator: PlannedOperator) -> dict[str, Any]:
    planned: dict[str, Any] = {"code": operator.code, "name": operator.name,
                               "reserve_fen": operator.reserve_fen}
    if operator.quota_fen is not None:
        planned["quota_fen"] = operator.quota_fen
    return planned


def _settled(settlement: Mapping[str, Any]) -> Outcome:
    return Outcome(ok=True, replayed=bool(settlement["replayed"]),
                   topped_up_fen=int(settlement["topped_up_fen"]),
                   swept_fen=int(settlement["swept_fen"]))
