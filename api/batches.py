"""The answer of a batch route: one result per item, in order, each what its single route would
have answered (its representation with 201, or its problem document with the problem's
status)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from api.errors import problem_of
from cbdc.domain.errors import CbdcError

_Answer = TypeVar("_Answer")
_Result = TypeVar("_Result", bound=BaseModel)


def item_results(
    answers: Sequence[_Answer | CbdcError],
    result: type[_Result],
    field: str,
    represent: Callable[[_Answer], BaseModel],
) -> tuple[list[_Result], int]:
    """``result(index=, status=, <field>=represent(answer))`` for each answer, or
    ``result(index=, status=, problem=)`` for each refusal; and how many were done."""
    results = [
        result(index=index, status=answer.status, problem=problem_of(answer))
        if isinstance(answer, CbdcError) else
        result(index=index, status=201, **{field: represent(answer)})
        for index, answer in enumerate(answers)
    ]
    return results, sum(not isinstance(answer, CbdcError) for answer in answers)
