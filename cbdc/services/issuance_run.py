"""Issuance runs: a central-bank plan (TOML) executed order by order.

Every step has an entry id derived from the run id (``run:RUN:reserve:OP``,
``run:RUN:order:00001``), and each commits on its own. A run interrupted at any point, even by
``kill -9``, is simply started again: the steps already committed answer with their first
result and nothing is issued twice. See ``examples/issuance-plan.toml`` for the format.
"""

from __future__ import annotations

import tomllib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbdc.domain.errors import (
    CbdcError,
    EntryConflict,
    InvalidAmount,
    InvalidPlan,
    InvalidRequest,
)
from cbdc.domain.money import check_amount, parse_yuan
from cbdc.services import issuance
from cbdc.services.context import LedgerContext

RUN_ID_LENGTH_MAX = 48


@dataclass(frozen=True, slots=True)
class PlannedOperator:
    code: str
    name: str
    quota_fen: int | None
    reserve_fen: int


@dataclass(frozen=True, slots=True)
class Order:
    number: int
    operator: str
    zone: str
    amount_fen: int

    def entry_id(self, run_id: str) -> str:
        return f"run:{run_id}:order:{self.number:05d}"


@dataclass(frozen=True, slots=True)
class Plan:
    run_id: str
    operators: tuple[PlannedOperator, ...]
    orders: tuple[Order, ...]

    @property
    def total_fen(self) -> int:
        return sum(order.amount_fen for order in self.orders)


@dataclass
class RunReport:
    run_id: str
    orders_planned: int = 0
    orders_issued_now: int = 0
    orders_already_done: int = 0
    failures: list[tuple[Order, CbdcError]] = field(default_factory=list)
    issued_by_operator: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    issued_by_zone: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def issued_fen(self) -> int:
        return sum(self.issued_by_operator.values())

    @property
    def complete(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "orders_planned": self.orders_planned,
            "orders_issued_now": self.orders_issued_now,
            "orders_already_done": self.orders_already_done,
            "issued_fen": self.issued_fen,
            "issued_by_operator": dict(self.issued_by_operator),
            "issued_by_zone": dict(self.issued_by_zone),
            "failures": [
                {"order": order.number, "operator": order.operator, "code": error.code,
                 "detail": error.detail}
                for order, error in self.failures
            ],
        }


def load_plan(path: Path) -> Plan:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPlan(f"cannot read plan {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidPlan(f"plan {path} is not valid TOML: {exc}") from exc
    return parse_plan(document)


_PLAN_KEYS = frozenset({"run_id", "operators", "orders"})
_OPERATOR_KEYS = frozenset({"code", "name", "quota", "quota_fen", "reserve", "reserve_fen"})
_ORDER_KEYS = frozenset({"operator", "zone", "amount", "amount_fen"})


def _known_keys(item: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    """A key the plan does not know (a misspelt ``reserve``, say) is refused, not ignored: the
    run would go ahead without it."""
    unknown = sorted(set(item) - known)
    if unknown:
        raise InvalidPlan(f"{where}: unknown {'keys' if len(unknown) > 1 else 'key'} "
                          f"{', '.join(map(repr, unknown))}")


def parse_plan(document: Mapping[str, Any]) -> Plan:
    _known_keys(document, _PLAN_KEYS, "plan")
    run_id = document.get("run_id")
    if not isinstance(run_id, str) or not run_id or len(run_id) > RUN_ID_LENGTH_MAX:
        raise InvalidPlan(f"run_id must be a string of 1-{RUN_ID_LENGTH_MAX} characters")
    operators = tuple(
        _parse_operator(item, number)
        for number, item in enumerate(_tables(document, "operators"), start=1)
    )
    orders = tuple(
        _parse_order(item, number)
        for number, item in enumerate(_tables(document, "orders"), start=1)
    )
    if not orders:
        raise InvalidPlan("the plan has no [[orders]]")
    return Plan(run_id=run_id, operators=operators, orders=orders)


def _tables(document: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidPlan(f"[[{key}]] must be an array of tables")
    return items


def _amount(item: Mapping[str, Any], name: str, where: str, *, required: bool) -> int | None:
    """An amount given as a yuan string (``amount = "1000.00"``) or int fen (``amount_fen``)."""
    text, fen = item.get(name), item.get(f"{name}_fen")
    if text is not None and fen is not None:
        raise InvalidPlan(f"{where}: give {name} or {name}_fen, not both")
    try:
        if text is not None:
            if not isinstance(text, str):
                raise InvalidPlan(f"{where}: {name} must be a quoted yuan string like \"12.34\"")
            return parse_yuan(text)
        if fen is not None:
            return check_amount(fen)
    except InvalidAmount as exc:
        raise InvalidPlan(f"{where}: {exc.detail}") from exc
    if required:
        raise InvalidPlan(f"{where}: {name} is required")
    return None


def _parse_operator(item: Mapping[str, Any], number: int) -> PlannedOperator:
    where = f"operator #{number}"
    _known_keys(item, _OPERATOR_KEYS, where)
    code, name = item.get("code"), item.get("name")
    if not isinstance(code, str) or not isinstance(name, str):
        raise InvalidPlan(f"{where}: code and name are required strings")
    try:
        issuance.check_operator_code(code)
        issuance.check_operator_name(name)
    except InvalidRequest as exc:
        raise InvalidPlan(f"{where}: {exc.detail}") from exc
    return PlannedOperator(
        code=code,
        name=name,
        quota_fen=_amount(item, "quota", where, required=False),
        reserve_fen=_amount(item, "reserve", where, required=False) or 0,
    )


def _parse_order(item: Mapping[str, Any], number: int) -> Order:
    where = f"order #{number}"
    _known_keys(item, _ORDER_KEYS, where)
    operator, zone = item.get("operator"), item.get("zone", "")
    if not isinstance(operator, str) or not isinstance(zone, str):
        raise InvalidPlan(f"{where}: operator (and zone, if given) must be strings")
    amount = _amount(item, "amount", where, required=True)
    assert amount is not None
    return Order(number=number, operator=operator, zone=zone, amount_fen=amount)


def _changed_plan(error: EntryConflict, run_id: str) -> EntryConflict:
    """An entry of this run id was posted with other content: the plan was changed."""
    return EntryConflict(f"{error.detail}: run {run_id} was run before with another plan; give "
                         "a changed plan a new run_id", entry_id=error.extra.get("entry_id"),
                         run_id=run_id)


def execute_plan(
    context: LedgerContext,
    plan: Plan,
    *,
    on_order: Callable[[Order], None] | None = None,
) -> RunReport:
    """Prepare operators (created if missing, quota and reserve as planned), then issue every
    order, each in its own transaction. Safe to call again after any interruption."""
    for planned in plan.operators:
        issuance.create_operator(context, planned.code, planned.name)
        if planned.quota_fen is not None:
            issuance.set_quota(context, planned.code, planned.quota_fen)
        if planned.reserve_fen:
            try:
                issuance.deposit_reserve(
                    context, f"run:{plan.run_id}:reserve:{planned.code}", planned.code,
                    planned.reserve_fen, metadata={"run_id": plan.run_id}, run_entry=True,
                )
            except EntryConflict as error:
                raise _changed_plan(error, plan.run_id) from error
    report = RunReport(run_id=plan.run_id, orders_planned=len(plan.orders))
    for order in plan.orders:
        try:
            posted = issuance.issue(
                context, order.entry_id(plan.run_id), order.operator, order.amount_fen,
                metadata={"run_id": plan.run_id, "zone": order.zone, "order": order.number},
                run_entry=True,
            )
        except EntryConflict as error:
            report.failures.append((order, _changed_plan(error, plan.run_id)))
        except CbdcError as error:
            report.failures.append((order, error))
        else:
            if posted.replayed:
                report.orders_already_done += 1
            else:
                report.orders_issued_now += 1
            report.issued_by_operator[order.operator] += order.amount_fen
            report.issued_by_zone[order.zone] += order.amount_fen
        if on_order is not None:
            on_order(order)
    return report
