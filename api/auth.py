"""Who is calling: API keys of institutions, roles, and object-level scoping.

Order of checks on every route, so the same bad request always gets the same answer:
401 (no or bad key) -> 403 (the role may not use this route at all) -> 404 for an object of
another operator (an operator cannot tell it from one that does not exist) -> 422 (schema) ->
400 for a missing idempotency key -> the service's own rules (including its own 404s).
Wallet actions additionally carry the wallet's Ed25519 signature, which the services verify:
a bearer key alone never moves a wallet's money.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.schemas.common import OPERATOR_CODE_PATTERN
from cbdc.domain.errors import AuthenticationFailed, Forbidden, NotFound
from cbdc.services.apikeys import Principal, verify_api_key
from cbdc.services.context import LedgerContext
from cbdc.services.wallets import Wallet, get_wallet
from cbdc.storage.wallets import wallet_not_found

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An institution's API key (`cbdc apikey create CODE`), as `Bearer KEY`.",
)


def ledger(request: Request) -> LedgerContext:
    context: LedgerContext = request.app.state.ledger
    return context


Ledger = Annotated[LedgerContext, Depends(ledger)]


def authenticated(
    context: Ledger,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise AuthenticationFailed("an API key is required: Authorization: Bearer KEY")
    return verify_api_key(context, credentials.credentials)


def central_bank(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if not principal.is_central_bank:
        raise Forbidden("only the central bank may do this", code="central_bank_only")
    return principal


def operator(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    if principal.role != "operator":
        raise Forbidden("only an operator may do this", code="operator_only")
    return principal


Caller = Annotated[Principal, Depends(authenticated)]
CentralBank = Annotated[Principal, Depends(central_bank)]
Operator = Annotated[Principal, Depends(operator)]


def check_operator_scope(principal: Principal, operator_code: str) -> None:
    """An operator sees only itself; another operator's code is 'not found', never 'forbidden'."""
    if not principal.is_central_bank and principal.institution_code != operator_code:
        raise NotFound(f"no operator {operator_code!r}", code="operator_not_found")


OperatorCodePath = Annotated[str, Path(pattern=OPERATOR_CODE_PATTERN, examples=["BANK-A"])]


def scoped_operator_code(code: OperatorCodePath, principal: Caller) -> str:
    """The ``{code}`` path parameter, once the caller may see that operator. A dependency, so
    it runs before the body is validated (a foreign operator's code is 404 whatever the body)."""
    check_operator_scope(principal, code)
    return code


ScopedOperatorCode = Annotated[str, Depends(scoped_operator_code)]


WalletIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,64}$", examples=["w-7f3a9c"])]


def owned_wallet(wallet_id: WalletIdPath, principal: Operator, context: Ledger) -> Wallet:
    """The ``{wallet_id}`` path parameter's wallet, if the calling operator serves it; another
    operator's wallet is exactly as 'not found' as one that does not exist."""
    wallet = get_wallet(context, wallet_id)
    if wallet.operator_code != principal.institution_code:
        raise wallet_not_found(wallet_id)
    return wallet


OwnedWallet = Annotated[Wallet, Depends(owned_wallet)]
