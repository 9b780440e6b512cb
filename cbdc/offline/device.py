"""A simulated secure element: the hardware wallet of an offline payment.

It holds an Ed25519 key that never leaves it (no accessor returns it), a monotonic payment
counter, an offline balance, its certificate chain, a revocation-list snapshot and the payments
the ledger does not have yet: those it made since its last acknowledged sync, and those it
received and the ledger has not settled. Its methods are the only way to change that state, and
each either changes it completely or raises before changing anything.

Received offline value is *pending*: it is recorded, never added to the offline balance, and
cannot be spent onward offline; it reaches the payee's wallet when the ledger settles it.

Storage is bounded, as in a real secure element: a verified sync receipt lets the device forget
what the ledger now holds, namely its own payments through the receipt's ``synced_counter`` and
the received payments the receipt lists as settled. What it keeps per payer device is one
counter and hash (the last payment seen from it), which is all replay detection needs: a
payment already received, settled and forgotten is still refused (``offline_counter_replayed``).
So the device's memory grows with the devices it deals with and with what it holds unsynced,
never with the number of payments it has made or received. Time is always passed in.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nacl.signing

from cbdc.domain.errors import (
    CertificateRefused,
    LoadRefused,
    OfflineRefused,
    RevocationListRefused,
    SyncRefused,
)
from cbdc.domain.money import check_amount
from cbdc.domain.signing import signed_bytes
from cbdc.offline import messages
from cbdc.offline.certificates import (
    NO_REVOCATIONS,
    DeviceCertificate,
    OfflineCaps,
    OperatorCertificate,
    RevocationSnapshot,
    check_chain_usable,
    verify_chain,
    verify_revocation_list,
)
from cbdc.offline.messages import (
    CURRENCY,
    LOAD_RECEIPT,
    OFFLINE_PAYMENT,
    SYNC_RECEIPT,
    UNLOAD,
    VERSION,
    ZERO_HASH,
    format_time,
)
from cbdc.offline.verification import VerifiedPayment, payment_envelope, verify_offline_payment

#: An own payment as the device keeps it until synced: message, signature, certificate chain.
_Made = tuple[Mapping[str, Any], bytes, DeviceCertificate, OperatorCertificate]


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A read-only view of a secure element (everything but its private key)."""

    device_id: str | None
    wallet: str | None
    caps: OfflineCaps | None
    balance_fen: int
    pending_fen: int
    counter: int
    load_counter: int
    unload_counter: int
    synced_counter: int
    payments_since_sync: int
    last_payment_hash: str
    loaded_fen_total: int
    paid_fen_total: int
    unloaded_fen_total: int
    revocation_number: int
    revocation_issued_at: datetime | None


class SecureElement:
    """One device. Build it from a key seed (randomness is the caller's), the ledger id and the
    pinned central-bank root key; an operator then certifies its :attr:`public_key`."""

    def __init__(self, *, seed: bytes, ledger_id: str, root_public_key: bytes) -> None:
        self.__signing_key = nacl.signing.SigningKey(seed)
        self.ledger_id = ledger_id
        self.root_public_key = root_public_key
        self._certificate: DeviceCertificate | None = None
        self._operator_certificate: OperatorCertificate | None = None
        self._revocations: RevocationSnapshot = NO_REVOCATIONS
        self._balance_fen = 0
        self._counter = 0
        self._load_counter = 0
        self._unload_counter = 0
        self._synced_counter = 0
        self._last_payment_hash = ZERO_HASH
        self._loaded_fen_total = 0
        self._paid_fen_total = 0
        self._unloaded_fen_total = 0
        # Own payments the ledger has not acknowledged (counter above _synced_counter), in
        # counter order, kept as their parts (the certificates shared, not copied into each);
        # received payments the ledger has not settled, by payment hash.
        self._made: list[_Made] = []
        self._received: dict[str, VerifiedPayment] = {}
        self._last_seen: dict[str, tuple[int, str]] = {}
        # Digests of the certificate chains this device verified under its pinned root: a
        # payee checks each payer's chain once, not at every payment.
        self._verified_chains: set[tuple[bytes, bytes]] = set()

    # --- views ----------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return bytes(self.__signing_key.verify_key)

    @property
    def device_id(self) -> str:
        return self._chain()[0].device_id

    @property
    def certificate(self) -> DeviceCertificate | None:
        return self._certificate

    def state(self) -> DeviceState:
        certificate = self._certificate
        return DeviceState(
            device_id=certificate.device_id if certificate else None,
            wallet=certificate.wallet if certificate else None,
            caps=certificate.caps if certificate else None,
            balance_fen=self._balance_fen,
            pending_fen=sum(p.amount_fen for p in self.pending_received()),
            counter=self._counter,
            load_counter=self._load_counter,
            unload_counter=self._unload_counter,
            synced_counter=self._synced_counter,
            payments_since_sync=self._counter - self._synced_counter,
            last_payment_hash=self._last_payment_hash,
            loaded_fen_total=self._loaded_fen_total,
            paid_fen_total=self._paid_fen_total,
            unloaded_fen_total=self._unloaded_fen_total,
            revocation_number=self._revocations.number,
            revocation_issued_at=self._revocations.issued_at,
        )

    def payments_made(self) -> tuple[dict[str, Any], ...]:
        """The device's own payment envelopes the ledger has not acknowledged yet (counter
        above ``synced_counter``), in counter order: what it uploads when it syncs. Older ones
        were forgotten on the sync receipt that acknowledged them."""
        return tuple(_json_copy(payment_envelope(*made)) for made in self._made)

    def payments_received(self) -> tuple[VerifiedPayment, ...]:
        """The received payments the device holds, in the order received: those no sync
        receipt has listed as settled yet (it uploads them when it syncs). A settled payment is
        forgotten; only its payer's counter is remembered, against replays."""
        return tuple(self._received.values())

    def pending_received(self) -> tuple[VerifiedPayment, ...]:
        """Received payments the ledger has not yet settled: not spendable onward (since
        settled ones are forgotten, the same payments as :meth:`payments_received`)."""
        return self.payments_received()

    def clone(self) -> SecureElement:
        """Test helper: what an attacker who extracted the secure element would hold (the same
        key, counter and balance). The clone can double-spend; the ledger must detect it."""
        return copy.deepcopy(self)

    # --- certificate and revocation ----------------------------------------------------------

    def install_certificate(
        self,
        certificate: DeviceCertificate,
        operator_certificate: OperatorCertificate,
        now: datetime,
    ) -> None:
        """Install (or renew) this device's certificate chain.

        Order: chain to the pinned root; the certificate is for this device's key and ledger;
        a renewal keeps the device id and wallet; usable at ``now``; the balance fits the caps.
        """
        verify_chain(certificate, operator_certificate, self.root_public_key)
        if certificate.public_key != self.public_key or certificate.ledger_id != self.ledger_id:
            raise CertificateRefused(
                f"certificate {certificate.serial} is not for this device's key and ledger",
                code="certificate_mismatch",
            )
        current = self._certificate
        if current and (current.device_id, current.wallet) != (
            certificate.device_id,
            certificate.wallet,
        ):
            raise CertificateRefused(
                "a renewal must keep the device id and wallet", code="certificate_mismatch"
            )
        check_chain_usable(certificate, operator_certificate, self._revocations, now)
        if self._balance_fen > certificate.caps.balance_fen_max:
            raise OfflineRefused(
                "the offline balance is above the new certificate's cap",
                code="offline_balance_cap_exceeded",
            )
        self._certificate = certificate
        self._operator_certificate = operator_certificate

    def install_revocation_list(self, envelope: Any) -> RevocationSnapshot:
        """Install a newer root-signed revocation list; re-installing the current one is a
        no-op, an older or conflicting one is refused (``revocation_list_stale``)."""
        current = self._revocations
        if current.envelope is not None and envelope == current.envelope:
            return current  # verified when it was installed
        snapshot = verify_revocation_list(envelope, self.root_public_key, self.ledger_id)
        if snapshot.number == current.number and snapshot.envelope == current.envelope:
            return current
        if snapshot.number <= current.number:
            raise RevocationListRefused(
                f"revocation list {snapshot.number} is not newer than {current.number}"
            )
        self._revocations = snapshot
        return snapshot

    # --- load and unload -------------------------------------------------------------------

    def apply_load(self, envelope: Any) -> dict[str, Any]:
        """Verify an operator-signed load receipt and raise the offline balance.

        Order: certified; shape and operator signature; for this ledger, operator, device and
        wallet (``load_wrong_device``); ``load_counter`` is exactly the next one
        (``load_replayed`` if already applied, ``load_out_of_order`` if one is missing); the
        balance stays within the cap (``offline_balance_cap_exceeded``).
        """
        certificate, operator_certificate = self._chain()
        receipt = messages.verify_envelope(LOAD_RECEIPT, envelope, operator_certificate.public_key)
        expected = (
            self.ledger_id, certificate.operator_id, certificate.device_id, certificate.wallet
        )
        found = (receipt["ledger_id"], receipt["operator"], receipt["device"], receipt["wallet"])
        if found != expected:
            raise LoadRefused(
                f"load receipt is for {found}, not {expected}", code="load_wrong_device"
            )
        if receipt["load_counter"] <= self._load_counter:
            raise LoadRefused(
                f"load {receipt['load_counter']} was already applied", code="load_replayed"
            )
        if receipt["load_counter"] != self._load_counter + 1:
            raise LoadRefused(
                f"load {receipt['load_counter']} arrives before load {self._load_counter + 1}",
                code="load_out_of_order",
            )
        balance_fen = self._balance_fen + receipt["amount_fen"]
        if balance_fen > certificate.caps.balance_fen_max:
            raise OfflineRefused(
                f"loading {receipt['amount_fen']} fen would take the offline balance above "
                f"{certificate.caps.balance_fen_max} fen",
                code="offline_balance_cap_exceeded",
            )
        self._balance_fen = balance_fen
        self._load_counter = receipt["load_counter"]
        self._loaded_fen_total += receipt["amount_fen"]
        return receipt

    def unload(self, now: datetime) -> dict[str, Any]:
        """Sign a statement returning the whole offline balance; the balance becomes zero and
        the statement closes every counter and load up to now."""
        certificate, _ = self._chain()
        statement = {
            "version": VERSION,
            "domain": UNLOAD,
            "ledger_id": self.ledger_id,
            "device": certificate.device_id,
            "wallet": certificate.wallet,
            "unload_counter": self._unload_counter + 1,
            "counter": self._counter,
            "last_payment_hash": self._last_payment_hash,
            "load_counter": self._load_counter,
            "loaded_fen_total": self._loaded_fen_total,
            "paid_fen_total": self._paid_fen_total,
            "amount_fen": self._balance_fen,
            "currency": CURRENCY,
            "created_at": format_time(now),
        }
        envelope = messages.seal(self.__signing_key, UNLOAD, statement)
        self._unload_counter += 1
        self._unloaded_fen_total += self._balance_fen
        self._balance_fen = 0
        return envelope

    # --- paying and receiving ---------------------------------------------------------------

    def pay(
        self, payee_device: str, payee_wallet: str, amount_fen: int, now: datetime
    ) -> dict[str, Any]:
        """Sign an offline payment and lower the balance, atomically.

        Order: certified; amount (``amount_invalid``); not to itself (``offline_self_payment``);
        own certificates usable at ``now``; single-payment cap (``offline_payment_cap_exceeded``);
        balance (``offline_value_pending`` if only pending received value would cover it, else
        ``offline_balance_insufficient``); payments since the last sync
        (``offline_payments_exhausted``).
        """
        certificate, operator_certificate = self._chain()
        check_amount(amount_fen)
        if payee_device == certificate.device_id:
            raise OfflineRefused("a device does not pay itself", code="offline_self_payment")
        check_chain_usable(certificate, operator_certificate, self._revocations, now)
        self._check_can_spend(certificate.caps, amount_fen)
        counter = self._counter + 1
        message = {
            "version": VERSION,
            "domain": OFFLINE_PAYMENT,
            "ledger_id": self.ledger_id,
            "payer_device": certificate.device_id,
            "payer_wallet": certificate.wallet,
            "counter": counter,
            "load_counter": self._load_counter,
            "payments_since_sync": counter - self._synced_counter,
            "payee_device": payee_device,
            "payee_wallet": payee_wallet,
            "amount_fen": amount_fen,
            "currency": CURRENCY,
            "created_at": format_time(now),
            "prev_hash": self._last_payment_hash,
        }
        plain = messages.validate(OFFLINE_PAYMENT, message)
        signed = signed_bytes(OFFLINE_PAYMENT, plain)  # canonicalised once: signed and hashed
        signature = bytes(self.__signing_key.sign(signed).signature)
        envelope = payment_envelope(plain, signature, certificate, operator_certificate)
        self._counter = counter
        self._last_payment_hash = hashlib.sha256(signed).hexdigest()
        self._balance_fen -= amount_fen
        self._paid_fen_total += amount_fen
        self._made.append((plain, signature, certificate, operator_certificate))
        copied: dict[str, Any] = _json_copy(envelope)
        return copied

    def _check_can_spend(self, caps: OfflineCaps, amount_fen: int) -> None:
        if amount_fen > caps.payment_fen_max:
            raise OfflineRefused(
                f"{amount_fen} fen is above the single-payment cap of {caps.payment_fen_max} fen",
                code="offline_payment_cap_exceeded",
            )
        if amount_fen > self._balance_fen:
            pending_fen = sum(p.amount_fen for p in self.pending_received())
            if amount_fen <= self._balance_fen + pending_fen:
                raise OfflineRefused(
                    f"only {self._balance_fen} fen is spendable offline; {pending_fen} fen "
                    f"received offline stays pending until the device syncs",
                    code="offline_value_pending",
                )
            raise OfflineRefused(
                f"offline balance {self._balance_fen} fen is below {amount_fen} fen",
                code="offline_balance_insufficient",
            )
        if self._counter - self._synced_counter >= caps.payments_max:
            raise OfflineRefused(
                f"{caps.payments_max} payments since the last sync: the device must go online",
                code="offline_payments_exhausted",
            )

    def receive(self, envelope: Any, now: datetime) -> VerifiedPayment:
        """Verify a payment offline and record it as pending.

        Order: certified; :func:`~cbdc.offline.verification.verify_offline_payment` (its rules
        1-7, with this device's ledger, revocation snapshot and clock); addressed to this device
        and wallet (``offline_wrong_payee``); not from itself (``offline_self_payment``); fresh:
        its counter is above every counter seen from that payer (``offline_counter_replayed``);
        when it directly follows the last payment seen from that payer, it chains onto it
        (``offline_chain_broken``).
        """
        certificate, _ = self._chain()
        payment = verify_offline_payment(
            envelope, self.root_public_key, self._revocations, now, ledger_id=self.ledger_id,
            verified_chains=self._verified_chains,
        )
        if (payment.payee_device, payment.payee_wallet) != (
            certificate.device_id,
            certificate.wallet,
        ):
            raise OfflineRefused(
                f"payment is addressed to {payment.payee_device}/{payment.payee_wallet}",
                code="offline_wrong_payee",
            )
        if payment.payer_device == certificate.device_id:
            raise OfflineRefused("a device does not pay itself", code="offline_self_payment")
        self._check_fresh(payment)
        self._received[payment.payment_hash] = payment
        self._last_seen[payment.payer_device] = (payment.counter, payment.payment_hash)
        return payment

    def _check_fresh(self, payment: VerifiedPayment) -> None:
        last_counter, last_hash = self._last_seen.get(payment.payer_device, (0, ZERO_HASH))
        if payment.counter <= last_counter:
            raise OfflineRefused(
                f"counter {payment.counter} of {payment.payer_device} is not above "
                f"{last_counter}, already seen",
                code="offline_counter_replayed",
            )
        if last_counter and payment.counter == last_counter + 1 and payment.prev_hash != last_hash:
            raise OfflineRefused(
                f"payment {payment.counter} of {payment.payer_device} does not follow the "
                f"payment {last_counter} this device received",
                code="offline_chain_broken",
            )

    # --- sync ------------------------------------------------------------------------------

    def sync_done(self, envelope: Any) -> dict[str, Any]:
        """Apply an operator-signed sync receipt: payments through ``synced_counter`` are on
        the ledger (resetting the payments-between-syncs count) and forgotten; the received
        payments listed in ``settled`` leave pending and are forgotten too. Replaying a receipt
        changes nothing."""
        certificate, operator_certificate = self._chain()
        receipt = messages.verify_envelope(SYNC_RECEIPT, envelope, operator_certificate.public_key)
        expected = (self.ledger_id, certificate.operator_id, certificate.device_id)
        if (receipt["ledger_id"], receipt["operator"], receipt["device"]) != expected:
            raise SyncRefused("sync receipt is for another device")
        if receipt["synced_counter"] > self._counter:
            raise SyncRefused(
                f"sync receipt acknowledges counter {receipt['synced_counter']}, beyond this "
                f"device's {self._counter}"
            )
        self._synced_counter = max(self._synced_counter, receipt["synced_counter"])
        self._made = [made for made in self._made if made[0]["counter"] > self._synced_counter]
        for payment_hash in receipt["settled"]:
            self._received.pop(payment_hash, None)
        return receipt

    # --- internals -------------------------------------------------------------------------

    def _chain(self) -> tuple[DeviceCertificate, OperatorCertificate]:
        if self._certificate is None or self._operator_certificate is None:
            raise OfflineRefused(
                "the device has no certificate yet", code="offline_device_uncertified"
            )
        return self._certificate, self._operator_certificate


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): what leaves the device is the
    caller's, and changing it changes nothing inside."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value
