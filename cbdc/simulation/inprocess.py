"""The in-process adapter: the driver's commands as calls of the same services the API calls.

A batch is one unit of work (``context.write()``); the services called inside it join it, and
each command runs inside its own savepoint, so a refused command changes nothing while the
settled ones around it commit together. The injected :class:`~cbdc.clock.ManualClock` is set to
each command's simulated moment before its service runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from cbdc.clock import ManualClock
from cbdc.domain.errors import CbdcError, Conflict
from cbdc.domain.identity import IdentityEvidence
from cbdc.services import funding, keys, merchants, offline, payments, wallets
from cbdc.services.audit import run_audit
from cbdc.services.context import LedgerContext
from cbdc.services.issuance_run import Plan, RunReport, execute_plan
from cbdc.services.reconcile import supply_report
from cbdc.simulation.metrics import SupplySample, final_state_hash
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
from cbdc.storage.tables import journal_entries

#: Commands that set the stage for a batch's payments: run first, each at its own moment.
_STAGE = (OpenWallet, TopUp, PresentRequest)


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
        """One unit of work: first what sets the stage (wallets, top-ups, payment requests),
        each at its own moment; then every signed payment in one :func:`settle_payments` call,
        and the rest (captures, refunds, withdrawals) in order, all at the batch's last moment:
        the ledger settles a batch when its window closes. Credits all come before debits, so
        no payer the driver funded can be short because of the grouping."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        settles_at = max((timed.at for timed in batch), default=None)
        with self.context.write() as connection:
            for index, timed in enumerate(batch):
                if isinstance(timed.command, _STAGE):
                    outcomes[index] = self._one(connection, timed.at, timed.command)
            if settles_at is not None:
                self._payments(connection, batch, outcomes, settles_at)
            for index, timed in enumerate(batch):
                if outcomes[index] is None:
                    outcomes[index] = self._one(connection, settles_at or timed.at,
                                                timed.command)
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def _one(self, connection: Connection, at: datetime, command: Command) -> Outcome:
        """One command in its own savepoint: a refusal leaves nothing behind."""
        self.clock.set(at)
        savepoint = connection.begin_nested()
        try:
            outcome = self._apply(command)
        except CbdcError as error:
            savepoint.rollback()
            return Outcome.refused(error.code)
        except BaseException:
            savepoint.rollback()
            raise
        savepoint.commit()
        return outcome

    def _payments(
        self, connection: Connection, batch: Sequence[Timed], outcomes: list[Outcome | None],
        settles_at: datetime,
    ) -> None:
        indices, envelopes = [], []
        for index, timed in enumerate(batch):
            if isinstance(timed.command, Pay):
                indices.append(index)
                envelopes.append(timed.command.payment)
        if not indices:
            return
        self.clock.set(settles_at)
        with connection.begin_nested():
            results = payments.settle_payments(self.context, envelopes)
        for index, result in zip(indices, results, strict=True):
            outcomes[index] = (Outcome.refused(result.code) if isinstance(result, CbdcError)
                               else _settled(result))

    def _apply(self, command: Command) -> Outcome:
        context = self.context
        if isinstance(command, PresentRequest):
            merchants.create_payment_request(context, command.request)
            return Outcome(ok=True)
        if isinstance(command, Capture):
            return _settled(merchants.capture_payment_code(context, command.code,
                                                           command.capture))
        if isinstance(command, Refund):
            return _settled(merchants.refund(context, command.refund))
        if isinstance(command, TopUp):
            posted = funding.top_up(context, command.entry_id, command.wallet_id,
                                    command.amount_fen)
            return Outcome(ok=True, replayed=posted.replayed)
        if isinstance(command, Withdraw):
            posted = funding.withdraw(context, command.entry_id, command.wallet_id,
                                      command.amount_fen)
            return Outcome(ok=True, replayed=posted.replayed)
        if isinstance(command, OpenWallet):
            return self._open(command)
        raise AssertionError(f"unknown command {command!r}")

    def _open(self, command: OpenWallet) -> Outcome:
        holder = command.holder
        wallets.open_wallet(
            self.context,
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
        )
        keys.enrol_key(self.context, command.wallet_id, command.public_key_hex)
        return Outcome(ok=True)

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


def _settled(settlement: payments.Settlement) -> Outcome:
    return Outcome(ok=True, replayed=settlement.replayed,
                   topped_up_fen=settlement.topped_up_fen, swept_fen=settlement.swept_fen)
