"""Answering a batch of signed commands in one unit of work, each exactly as it would have been
answered alone, in order: the machinery that payments, captures and payment requests share.

A service checks a command in a documented order and answers with the first failure. A batch
runs that order in three parts, so that the costly ones overlap:

1. ``prepare``, on this thread, for each command: what needs neither its signature nor the
   database. Failures of checks that come *before* the signature (the envelope's shape and
   fields) are raised and answered at once; failures of checks that come after it (the ledger
   id, ...) are set aside (:class:`Prepared` ``later``), to be answered only once the signature
   is known to be good.
2. The Ed25519 signatures: sent to a worker process at once (:mod:`cbdc.services.verifier`;
   a batch with only a few is checked here), so they are checked on the second core while this
   thread runs step 3.
3. ``write``, in one unit of work, on this thread while step 2 runs: the checks against the
   database and the batch's running state, optimistically. It writes nothing until every verdict
   is in; if a command was forged it starts again without it (:func:`forged_out`), since a
   forged command must not have moved the running state the others were checked against.

A forged command is answered ``signature_invalid``. If a concurrent unit of work wins the race
for a unique key that the batch's locks did not cover, the database refuses the batch
(IntegrityError), or the journal finds the settlement's entry id already posted by the winner
(``entry_conflict``: it committed between this batch's look at the settlements and its posting),
and each command is then answered alone, as if it had come second where it did (``after_race``).
Inside a unit of work the caller holds, a refused unique key goes to the caller instead, whose
rollback alone can undo what the batch wrote before it (:func:`_undone_or_raise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from cbdc.domain.errors import CbdcError, EntryConflict, InvalidSignature
from cbdc.domain.messages import PreparedEnvelope
from cbdc.services.context import LedgerContext
from cbdc.services.verifier import Pending


class Indexed(Protocol):
    """A command of a batch, knowing its place in it (answers are given by place)."""

    @property
    def index(self) -> int: ...


RawT = TypeVar("RawT")
ItemT = TypeVar("ItemT", bound=Indexed)
AnswerT = TypeVar("AnswerT")



class Verdicts(Protocol):
    """Each command's signature verdict, by its place in the batch (blocks until all are in)."""

    def result(self) -> dict[int, bool]: ...


@dataclass(frozen=True, slots=True)
class Prepared(Generic[ItemT]):
    """A command after step 1: the envelopes whose signatures decide (all must verify) and then
    either the answer of a check after the signature that failed (``later``) or the ``item`` to
    check against the database."""

    index: int
    envelopes: tuple[PreparedEnvelope, ...]
    later: CbdcError | None = None
    item: ItemT | None = None


def checked_later(
    index: int, envelopes: tuple[PreparedEnvelope, ...], check: Callable[[], ItemT]
) -> Prepared[ItemT]:
    """Run ``check`` (checks that come after the signature); set its refusal aside."""
    try:
        return Prepared(index, envelopes, item=check())
    except CbdcError as error:
        return Prepared(index, envelopes, later=error)


Answers = list[AnswerT | CbdcError | None]


def answer_batch(
    context: LedgerContext,
    commands: Sequence[RawT],
    prepare: Callable[[int, RawT], Prepared[ItemT]],
    write: Callable[[Connection, list[ItemT], Answers[AnswerT], Verdicts], None],
    after_race: Callable[[ItemT], AnswerT],
) -> list[AnswerT | CbdcError]:
    """Answer each of ``commands``, in order (see the module docstring for the three parts)."""
    answers: Answers[AnswerT] = [None] * len(commands)
    prepared: list[Prepared[ItemT]] = []
    for index, command in enumerate(commands):
        try:
            prepared.append(prepare(index, command))
        except CbdcError as error:
            answers[index] = error
    verdicts = _Verification(prepared)
    items = [each.item for each in prepared if each.item is not None]
    try:
        if items:
            _write_or_each_alone(context, items, answers, verdicts, write, after_race)
    finally:
        valid = verdicts.result()  # taken even on the way out, so the worker's answer is read
    for each in prepared:
        if not valid[each.index]:
            answers[each.index] = InvalidSignature("signature does not verify")
        elif each.later is not None:
            answers[each.index] = each.later
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]


def only(answers: list[AnswerT | CbdcError]) -> AnswerT:
    """The answer of a batch of one: what the single-command services return (or raise)."""
    (answer,) = answers
    if isinstance(answer, CbdcError):
        raise answer
    return answer


def forged_out(
    items: list[ItemT], verdicts: Verdicts, answers: Answers[AnswerT]
) -> list[ItemT] | None:
    """After the optimistic checks: None if every signature verified. Otherwise (rare) the items
    whose signatures did, their answers so far cleared, to be checked again without the others;
    ``write`` must not have written anything yet."""
    valid = verdicts.result()
    if all(valid[item.index] for item in items):
        return None
    for item in items:
        answers[item.index] = None
    return [item for item in items if valid[item.index]]


def all_verified(items: Sequence[Indexed]) -> Verdicts:
    return _settled({item.index: True for item in items})


class _Verification(Generic[ItemT]):
    """The batch's signatures, sent to the verifier at once; their verdicts by command (all of
    a command's envelopes must verify) when asked for."""

    def __init__(self, prepared: list[Prepared[ItemT]]) -> None:
        self._prepared = prepared
        self._pending = Pending([(envelope.public_key, envelope.signed_bytes, envelope.signature)
                                 for each in prepared for envelope in each.envelopes])
        self._verdicts: dict[int, bool] | None = None

    def result(self) -> dict[int, bool]:
        if self._verdicts is None:
            flat = iter(self._pending.result())
            # A list, not a generator: all() would stop at a bad signature and leave the rest
            # of that command's verdicts to the next command.
            self._verdicts = {
                each.index: all([next(flat) for _ in each.envelopes]) for each in self._prepared
            }
        return self._verdicts


def _settled(verdicts: dict[int, bool]) -> Verdicts:
    done: Future[dict[int, bool]] = Future()
    done.set_result(verdicts)
    return done


#: What a batch meets when a concurrent unit of work settled one of its ids first.
_LOST_RACE = (IntegrityError, EntryConflict)


def _undone_or_raise(refusal: Exception, joined: bool) -> None:
    """Commands are answered again, one by one, only once the refused attempt has left nothing
    behind. Its own unit of work was rolled back, and the journal refuses a posted entry id
    (``entry_conflict``) before the attempt writes anything; but a unique key refused inside a
    unit of work the caller holds (``joined``) follows the attempt's earlier writes, which only
    the caller's rollback undoes: the refusal goes to the caller (on PostgreSQL the API runs
    such a unit again; on SQLite, where writers take turns, it would mean a bug)."""
    if joined and isinstance(refusal, IntegrityError):
        raise refusal


def _write_or_each_alone(
    context: LedgerContext,
    items: list[ItemT],
    answers: Answers[AnswerT],
    verdicts: Verdicts,
    write: Callable[[Connection, list[ItemT], Answers[AnswerT], Verdicts], None],
    after_race: Callable[[ItemT], AnswerT],
) -> None:
    joined = context.joined()
    try:
        with context.write() as connection:
            write(connection, items, answers, verdicts)
        return
    except _LOST_RACE as refusal:
        _undone_or_raise(refusal, joined)
    valid = verdicts.result()
    for item in items:
        if valid[item.index]:
            answers[item.index] = _alone(context, item, write, after_race)


def _alone(
    context: LedgerContext,
    item: ItemT,
    write: Callable[[Connection, list[ItemT], Answers[AnswerT], Verdicts], None],
    after_race: Callable[[ItemT], AnswerT],
) -> AnswerT | CbdcError:
    answers: Answers[AnswerT] = [None] * (item.index + 1)
    joined = context.joined()
    try:
        with context.write() as connection:
            write(connection, [item], answers, all_verified([item]))
    except _LOST_RACE as refusal:
        _undone_or_raise(refusal, joined)
        try:
            return after_race(item)
        except CbdcError as error:
            return error
    answer = answers[item.index]
    assert answer is not None
    return answer
