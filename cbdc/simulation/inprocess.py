"""The in-process adapter: the driver's commands as calls of the same services the API calls.

A batch is one unit of work (``context.write()``); the services called inside it join it and
answer each command as if it had come alone, so a refused command changes nothing while the
settled ones around it commit together. The injected :class:`~cbdc.clock.ManualClock` is set to
each command's simulated moment before its service runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import func, select

from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError, Conflict
from cbdc.domain.identity import IdentityEvidence
from cbdc.services import funding, merchants, offline, payments, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.issuance_run import Plan, RunReport, execute_plan
from cbdc.services.reconcile import supply_report
from cbdc.simulation.metrics import SupplySample, final_state_hash
from cbdc.simulation.ports import (
    Capture,
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
from cbdc.storage.tables import journal_entries

_C = TypeVar("_C")
_R = TypeVar("_R")



class InProcessLedger:
    def __init__(self, context: LedgerContext, clock: ManualClock) -> None:
        self.context = context
        self.clock = clock
        self.ledger_id = context.ledger_id

    def set_time(self, moment: datetime) -> None:
        self.clock.set(moment.astimezone(UTC))

    def ensure_empty(self) -> None:
        with self.context.read() as connection:
            entries = connection.execute(select(func.count()).select_from(journal_entries))
            if entries.scalar_one():
                raise Conflict(
                    "the simulation needs an empty ledger (its final state hash covers the "
                    "whole ledger); use a fresh database",
                    code="ledger_not_empty",
                )

    def run_issuance(self, plan: Plan) -> RunReport:
        return execute_plan(self.context, plan)

    def submit(self, batch: Sequence[Timed]) -> list[Outcome]:
        """One unit of work, in this order: the batch's wallets open (with their keys) in one
        :func:`open_wallets` call at the batch's first moment; its payment requests are
        presented in one call at the first one's moment (no later than any was signed, so none
        has expired yet); then, at the batch's last moment (the ledger settles a batch when its
        window closes), its top-ups in one :func:`top_ups` call, every signed payment and
        capture and refund in one :func:`settle_batch` call, and the withdrawals in one
        :func:`withdrawals` call. The clock never goes back, and credits all come before
        debits, so no payer the driver funded (nor a merchant sweeping its takings) can be short
        because of the grouping."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        settles_at = max((timed.at for timed in batch), default=None)
        with self.context.write():
            self._open_wallets(batch, outcomes)
            self._requests(batch, outcomes)
            if settles_at is not None:
                self._funding(batch, outcomes, TopUp, settles_at)
                self._payments(batch, outcomes, settles_at)
                self._funding(batch, outcomes, Withdraw, settles_at)
        assert all(outcome is not None for outcome in outcomes), "a command kind not sent"
        return outcomes  # type: ignore[return-value]

    def _requests(self, batch: Sequence[Timed], outcomes: list[Outcome | None]) -> None:
        self._in_one_call(
            batch, outcomes, PresentRequest,
            next((timed.at for timed in batch if isinstance(timed.command, PresentRequest)),
                 None),
            lambda commands: merchants.create_payment_requests(
                self.context, [command.request for command in commands]),
            lambda _: Outcome(ok=True),
        )

    def _payments(
        self, batch: Sequence[Timed], outcomes: list[Outcome | None], settles_at: datetime,
    ) -> None:
        indices: list[int] = []
        items: list[payments.Command] = []
        for index, timed in enumerate(batch):
            if isinstance(timed.command, Pay):
                items.append(timed.command.payment)
            elif isinstance(timed.command, Capture):
                items.append(payments.CodeCapture(timed.command.code, timed.command.capture))
            elif isinstance(timed.command, Refund):
                items.append(payments.MerchantRefund(timed.command.refund))
            else:
                continue
            indices.append(index)
        if not indices:
            return
        self.clock.set(settles_at)
        results = payments.settle_batch(self.context, items)
        for index, result in zip(indices, results, strict=True):
            outcomes[index] = (Outcome.refused(result.code) if isinstance(result, CbdcError)
                               else _settled(result))

    def _open_wallets(self, batch: Sequence[Timed], outcomes: list[Outcome | None]) -> None:
        self._in_one_call(
            batch, outcomes, OpenWallet, min((timed.at for timed in batch), default=None),
            lambda commands: wallets.open_wallets(self.context, [_opening(c) for c in commands]),
            lambda _: Outcome(ok=True),
        )

    def _funding(self, batch: Sequence[Timed], outcomes: list[Outcome | None],
                 kind: type[TopUp] | type[Withdraw], settles_at: datetime) -> None:
        move = funding.top_ups if kind is TopUp else funding.withdrawals
        self._in_one_call(
            batch, outcomes, kind, settles_at,
            lambda commands: move(self.context, [
                funding.Funding(c.entry_id, c.wallet_id, c.amount_fen) for c in commands]),
            lambda posted: Outcome(ok=True, replayed=posted.replayed),
        )

    def _in_one_call(
        self, batch: Sequence[Timed], outcomes: list[Outcome | None], kind: type[_C],
        at: datetime | None, call: Callable[[list[_C]], Sequence[_R | CbdcError]],
        answer: Callable[[_R], Outcome],
    ) -> None:
        """The batch's commands of ``kind`` in one service call at ``at``, refusals and all."""
        chosen = [(index, timed.command) for index, timed in enumerate(batch)
                  if isinstance(timed.command, kind)]
        if not chosen or at is None:
            return
        self.clock.set(at)
        results = call([command for _, command in chosen])
        for (index, _), result in zip(chosen, results, strict=True):
            outcomes[index] = (Outcome.refused(result.code) if isinstance(result, CbdcError)
                               else answer(result))

    def supply(self, hour: int) -> SupplySample:
        report = supply_report(self.context)
        return SupplySample(
            hour=hour,
            outstanding_fen=report.outstanding_fen,
            reserves_fen=report.reserves_fen,
            floats_fen=sum(op.float_fen for op in report.operators),
            wallets_fen=sum(op.wallets_fen for op in report.operators),
            escrow_fen=sum(op.escrow_fen for op in report.operators),
        )

    def verdicts(self) -> Verdicts:
        audit = run_audit(self.context)
        supply = supply_report(self.context)
        supply_dict = supply.as_dict()
        supply_dict["total"]["wallets_fen"] = sum(op.wallets_fen for op in supply.operators)
        return Verdicts(audit_ok=audit.ok, audit=audit.as_dict(),
                        supply_balanced=supply.balanced, supply=supply_dict)

    def final_state_hash(self) -> str:
        return final_state_hash(self.context)

    # -- offline (the same services as the API's offline routes, in batches) ----------------

    @contextmanager
    def offline_session(self) -> Iterator[None]:
        with self.context.write():
            yield

    def provision_devices(
        self, requests: Sequence[offline.DeviceRequest]
    ) -> list[offline.ProvisionedDevice | CbdcError]:
        return offline.provision_devices(self.context, requests)

    def load_devices(
        self, loads: Sequence[offline.DeviceLoad]
    ) -> list[dict[str, Any] | CbdcError]:
        return offline.load_devices(self.context, loads)

    def upload_offline(
        self, uploads: Sequence[offline.Upload]
    ) -> list[offline.UploadReport | CbdcError]:
        return offline.upload_offline_batches(self.context, uploads)

    def fraud_devices(self) -> dict[str, int]:
        return dict(Counter(case.device_id for case in offline.fraud_cases(self.context)))

    def close(self) -> None:
        self.context.dispose()


def _opening(command: OpenWallet) -> wallets.WalletOpening:
    holder = command.holder
    return wallets.WalletOpening(
        command.wallet_id,
        operator_code=command.operator_code,
        evidence=IdentityEvidence(
            phone=holder.phone, id_document=holder.id_document,
            bank_account=holder.bank_account, in_person=holder.in_person,
        ),
        zone=command.zone,
        wallet_class=command.wallet_class,
        holder_kind="corporate" if command.merchant_category_code else "personal",
        merchant_category_code=command.merchant_category_code,
        public_key_hex=command.public_key_hex,
    )


def _settled(settlement: payments.Settlement) -> Outcome:
    return Outcome(ok=True, replayed=settlement.replayed,
                   topped_up_fen=settlement.topped_up_fen, swept_fen=settlement.swept_fen)
