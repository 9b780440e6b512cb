"""Every example a request body shows at /docs (and schemathesis starts from) is a body that
schema accepts: a client copying one gets past validation to the ledger's own rules."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, cast

import pytest
from pydantic import BaseModel

import api.schemas
from api.schemas.common import RequestModel


def _with_examples() -> list[tuple[type[BaseModel], dict[str, Any]]]:
    found: list[tuple[type[BaseModel], dict[str, Any]]] = []
    for module_info in pkgutil.iter_modules(api.schemas.__path__):
        module = importlib.import_module(f"api.schemas.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, RequestModel)
                    and value.__module__ == module.__name__):
                extra = value.model_config.get("json_schema_extra")
                for example in (extra or {}).get("examples", []):  # type: ignore[union-attr]
                    found.append((value, cast(dict[str, Any], example)))
    return found


EXAMPLES = _with_examples()


def test_the_batch_bodies_show_examples() -> None:
    shown = {model.__name__ for model, _ in EXAMPLES}
    assert {"SettlementBatch", "PaymentRequestBatch", "WalletBatch", "FundingBatch",
            "PaymentBatch"} <= shown


@pytest.mark.parametrize(("model", "example"), EXAMPLES,
                         ids=[f"{model.__name__}-{n}" for n, (model, _) in enumerate(EXAMPLES)])
def test_each_example_is_a_valid_body(model: type[BaseModel], example: dict[str, Any]) -> None:
    model.model_validate(example)
