"""Uploads with the very certificates the ledger issued take a shorter path (no chain
verification, signatures checked as compact triples): it must reach the same verdict, with the
same code, as the full authentication of :func:`authenticate_many`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cbdc.domain import signing
from cbdc.domain.money import yuan
from cbdc.domain.postings import canonical_json
from cbdc.offline import DeviceCertificate
from cbdc.offline.batch import (
    Authenticated,
    Refusal,
    TrustedChain,
    authenticate_many,
    conclude,
    prepare_trusted,
)
from tests.unit.offline.world import LEDGER_ID, World


def _issued(envelope: dict[str, Any]) -> dict[str, TrustedChain]:
    certificate = envelope["certificate"]
    return {certificate["message"]["subject"]: TrustedChain(
        DeviceCertificate.from_envelope(certificate), certificate,
        envelope["operator_certificate"])}


def _short_path(
    envelope: dict[str, Any], chains: dict[str, TrustedChain], ledger_id: str = LEDGER_ID
) -> Authenticated | Refusal | None:
    prepared = prepare_trusted(envelope, chains)
    if prepared is None or isinstance(prepared, Refusal):
        return prepared
    (valid,) = signing.verify_many([prepared.triple()])
    return conclude(envelope, prepared, valid, ledger_id)


def _full_path(world: World, envelope: dict[str, Any], ledger_id: str = LEDGER_ID) -> Any:
    (result,) = authenticate_many([envelope], world.root.public_key, ledger_id)
    return result


def test_a_card_payment_with_its_issued_certificates_authenticates_as_in_full() -> None:
    world = World()
    alice, shop = world.device("alice"), world.device("shop")
    world.load(alice, yuan(100))
    envelope = alice.pay(shop.device_id, "w-shop", yuan(12), world.tick())
    chains = _issued(envelope)
    assert set(chains) == {"alice"}

    short = _short_path(envelope, chains)
    assert isinstance(short, Authenticated)
    assert replace(short, message_json=None) == _full_path(world, envelope)
    assert short.message_json == canonical_json(envelope["message"]).decode("ascii")

    # Another ledger: authentic, yet refused with the same code either way.
    assert _short_path(envelope, chains, "cbdc-other") == _full_path(world, envelope, "cbdc-other")


def test_altered_payments_are_refused_with_the_full_paths_codes() -> None:
    world = World()
    alice, shop = world.device("alice"), world.device("shop")
    world.load(alice, yuan(100))
    envelope = alice.pay(shop.device_id, "w-shop", yuan(12), world.tick())
    chains = _issued(envelope)
    more = {**envelope, "message": {**envelope["message"], "amount_fen": yuan(120)}}
    unsigned = {**envelope, "signature": "00" * 64}
    misshapen = {**envelope, "message": {**envelope["message"], "counter": "1"}}
    for altered in (more, unsigned, misshapen):
        short = _short_path(altered, chains)
        assert isinstance(short, Refusal)
        assert short == _full_path(world, altered)
    assert [_full_path(world, e).code for e in (more, unsigned)] == ["signature_invalid"] * 2


def test_certificates_not_exactly_as_issued_take_the_full_path() -> None:
    world = World()
    alice, bob, shop = world.device("alice"), world.device("bob"), world.device("shop")
    world.load(alice, yuan(100))
    world.load(bob, yuan(100))
    envelope = alice.pay(shop.device_id, "w-shop", yuan(12), world.tick())
    chains = _issued(envelope)
    certificate = envelope["certificate"]
    # ``true`` equals ``1`` in Python, never in JSON: no longer the certificate issued.
    loose = {**certificate, "message": {**certificate["message"], "version": True}}
    assert _short_path({**envelope, "certificate": loose}, chains) is None
    # Bob's payment travelling with Alice's certificates: not his chain, judged in full.
    theirs = {**bob.pay(shop.device_id, "w-shop", yuan(5), world.tick()),
              "certificate": certificate,
              "operator_certificate": envelope["operator_certificate"]}
    assert _short_path(theirs, chains) is None
    assert _full_path(world, theirs).code == "certificate_mismatch"
