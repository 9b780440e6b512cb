"""The HTTP adapter: the driver's commands as requests to a running ``cbdc serve``.

It speaks to the API as a real client would, in the batch routes a bank's back office would
use: the central bank's key for the issuance run, the supply report and the audit; each
operator's key for the wallets it serves (``/v1/wallets/batch``, each wallet with its key;
``/v1/top-ups/batch``, ``/v1/withdrawals/batch``); payment requests relayed in
``/v1/payment-requests/batch`` calls, and signed payments, captures and refunds, in order, in
``/v1/settlements/batch`` calls. Every money-moving POST carries an ``Idempotency-Key`` (the
run's own counter: unique per request of this run). Refusals come back as problem documents
whose ``code`` is the same as in-process.

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

#: A batch route takes at most this many items; ``/v1/settlements/batch`` (a capture carries two
#: envelopes) :data:`SETTLEMENT_BATCH_SIZE_MAX`.
BATCH_SIZE_MAX = 1_000
SETTLEMENT_BATCH_SIZE_MAX = 500


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
        #: The figures of the last verdicts, as the server gave them: the final state hash is a
        #: digest of them, and nothing changes the ledger between the two (the server's audit
        #: of a default run takes seconds).
        self._final_figures: str | None = None
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
        """The in-process order, each step in batch calls of the batch's commands in order: the
        wallets open with their keys (``/v1/wallets/batch``, as their operator), the payment
        requests are presented (``/v1/payment-requests/batch``), the top-ups are made
        (``/v1/top-ups/batch``, as each wallet's operator), every signed payment, capture and
        refund is settled (``/v1/settlements/batch``), and the withdrawals are made last
        (``/v1/withdrawals/batch``)."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        steps: list[tuple[tuple[type, ...], Callable[[Command], str | None], int, _Send]] = [
            ((OpenWallet,), _opening_operator, BATCH_SIZE_MAX, self._open),
            ((PresentRequest,), _anyone, BATCH_SIZE_MAX, self._present),
            ((TopUp,), self._funding_operator, BATCH_SIZE_MAX, self._top_up),
            ((Pay, Capture, Refund), _anyone, SETTLEMENT_BATCH_SIZE_MAX, self._settle),
            ((Withdraw,), self._funding_operator, BATCH_SIZE_MAX, self._withdraw),
        ]
        for kinds, operator_of, most, send in steps:
            by_operator: dict[str | None, list[int]] = {}
            for index, timed in enumerate(batch):
                if isinstance(timed.command, kinds):
                    by_operator.setdefault(operator_of(timed.command), []).append(index)
            for operator, chosen in by_operator.items():
                for start in range(0, len(chosen), most):
                    chunk = chosen[start:start + most]
                    answers = send(operator, [batch[index].command for index in chunk])
                    for index, outcome in zip(chunk, answers, strict=True):
                        outcomes[index] = outcome
        assert all(outcome is not None for outcome in outcomes), "a command kind not sent"
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
        self._final_figures = _figures(audit, supply)
        supply["total"]["wallets_fen"] = sum(op["wallets_fen"] for op in supply["operators"])
        return Verdicts(audit_ok=bool(audit["ok"]), audit=audit,
                        supply_balanced=bool(supply["total"]["balanced"]), supply=supply)

    def final_state_hash(self) -> str:
        """Not the in-process hash (the server's clock stamped the journal): a digest of the
        audit's and supply report's figures, labelled as such (those of :meth:`verdicts` when it
        ran last: the run is over by then)."""
        figures = self._final_figures
        if figures is None:
            figures = _figures(self._central("POST", "/v1/audits"),
                               self._central("GET", "/v1/reports/supply"))
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

    def _funding_operator(self, command: Command) -> str | None:
        """A top-up or withdrawal goes as its wallet's operator (unknown: as any operator, and
        the server answers ``wallet_not_found``)."""
        assert isinstance(command, TopUp | Withdraw)
        return self.wallet_operator.get(command.wallet_id)

    def _open(self, operator: str | None, commands: Sequence[Command]) -> list[Outcome]:
        openings = [command for command in commands if isinstance(command, OpenWallet)]
        assert operator is not None and len(openings) == len(commands)
        outcomes = self._batch(operator, "/v1/wallets/batch",
                               {"wallets": [_opening(command) for command in openings]},
                               "wallet", lambda _: Outcome(ok=True))
        for command, outcome in zip(openings, outcomes, strict=True):
            if outcome.ok:
                self.wallet_operator[command.wallet_id] = operator
        return outcomes

    def _present(self, _: str | None, commands: Sequence[Command]) -> list[Outcome]:
        return self._batch(None, "/v1/payment-requests/batch",
                           {"requests": [dict(command.request) for command in commands
                                         if isinstance(command, PresentRequest)]},
                           "payment_request", lambda _: Outcome(ok=True))

    def _top_up(self, operator: str | None, commands: Sequence[Command]) -> list[Outcome]:
        return self._batch(operator, "/v1/top-ups/batch", {"items": _funding(commands)},
                           "entry", _posted)

    def _withdraw(self, operator: str | None, commands: Sequence[Command]) -> list[Outcome]:
        return self._batch(operator, "/v1/withdrawals/batch", {"items": _funding(commands)},
                           "entry", _posted)

    def _settle(self, _: str | None, commands: Sequence[Command]) -> list[Outcome]:
        return self._batch(None, "/v1/settlements/batch",
                           {"items": [_item(command) for command in commands]},
                           "settlement", _settled)

    def _batch(self, operator: str | None, path: str, body: dict[str, list[Any]], answered: str,
               outcome: Callable[[Mapping[str, Any]], Outcome]) -> list[Outcome]:
        """One batch call; each result's ``answered`` member made an outcome, or its problem's
        code a refusal."""
        (items,) = body.values()
        try:
            answer = self._operator(operator, "POST", path, body, money=True)
        except _Refused as refused:  # the whole batch refused (its shape): each item too
            return [Outcome.refused(refused.code)] * len(items)
        return [outcome(result[answered]) if result[answered] is not None
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


_Send = Callable[[str | None, Sequence[Command]], list[Outcome]]


def _anyone(_: Command) -> None:
    """Relayed by any operator: what the wallet signed (payments, captures, refunds, payment
    requests)."""
    return None


def _opening_operator(command: Command) -> str:
    assert isinstance(command, OpenWallet)
    return command.operator_code


def _opening(command: OpenWallet) -> dict[str, Any]:
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
        "public_key": command.public_key_hex,
    }
    if command.merchant_category_code is not None:
        body["merchant_category_code"] = command.merchant_category_code
    return body


def _funding(commands: Sequence[Command]) -> list[dict[str, Any]]:
    return [{"wallet_id": command.wallet_id, "entry_id": command.entry_id,
             "amount_fen": command.amount_fen}
            for command in commands if isinstance(command, TopUp | Withdraw)]


def _posted(entry: Mapping[str, Any]) -> Outcome:
    return Outcome(ok=True, replayed=bool(entry["replayed"]))


def _item(command: Command) -> dict[str, Any]:
    """A payment, capture or refund as an item of ``/v1/settlements/batch``."""
    if isinstance(command, Pay):
        return {"kind": "payment", "payment": dict(command.payment)}
    if isinstance(command, Capture):
        return {"kind": "capture", "payment_code": dict(command.code),
                "capture": dict(command.capture)}
    if isinstance(command, Refund):
        return {"kind": "refund", "refund": dict(command.refund)}
    raise AssertionError(f"not a settlement: {command!r}")


def _settled(settlement: Mapping[str, Any]) -> Outcome:
    return Outcome(ok=True, replayed=bool(settlement["replayed"]),
                   topped_up_fen=int(settlement["topped_up_fen"]),
                   swept_fen=int(settlement["swept_fen"]))


def _figures(audit: dict[str, Any], supply: dict[str, Any]) -> str:
    return json.dumps({"audit": audit, "supply": supply}, sort_keys=True)
