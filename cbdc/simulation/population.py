"""The cast of a simulation: personal wallets and merchants, with what their apps know.

Wallets are numbered: ``0 .. wallet_count-1`` are people (``p0000042``), the rest merchants
(``m000007``). Per wallet the driver keeps only small fixed-size facts (class, zone, operator, the
balance its app has learned from receipts, the last payment sequence its key used) in compact
arrays, and its Ed25519 key, derived from the run's seed so the same seed gives the same
signatures. Memory grows with the number of wallets, never with the number of payments.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from dataclasses import dataclass

from cbdc.client import WalletKey
from cbdc.simulation.amounts import WeightedChoice, apportion
from cbdc.simulation.ports import Holder, OpenWallet
from cbdc.simulation.scenario import Scenario


def root_seed(scenario: Scenario, seed: int) -> bytes:
    """The secret every wallet key of this run is derived from."""
    return hashlib.sha256(f"cbdc-simulation/{scenario.name}/{seed}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Merchant:
    index: int
    category: int


class Population:
    def __init__(self, scenario: Scenario, rng: random.Random, seed: int) -> None:
        self.scenario = scenario
        self.people = scenario.wallet_count
        self.size = scenario.wallet_count + scenario.merchant_count
        self.zone_codes = [zone.code for zone in scenario.zones]
        self.operator_codes = [operator.code for operator in scenario.operators]
        self.wallet_class = bytearray(self.size)
        self.zone = bytearray(self.size)
        self.operator = bytearray(self.size)
        self.category = bytearray(self.size)
        self.balance_fen = array("q", bytes(8 * self.size))
        self.sequence = array("q", bytes(8 * self.size))
        self._assign(rng)
        secret = root_seed(scenario, seed)
        self.keys = [WalletKey.derive(secret, self.wallet_id(i)) for i in range(self.size)]
        self.people_by_zone = self._by_zone(range(self.people))
        self.merchants_by_zone = self._by_zone(range(self.people, self.size))

    def _assign(self, rng: random.Random) -> None:
        scenario = self.scenario
        classes = []
        counts = apportion(self.people, [share for _, share in scenario.class_shares])
        for (wallet_class, _), count in zip(scenario.class_shares, counts, strict=True):
            classes.extend([wallet_class] * count)
        rng.shuffle(classes)
        zones = WeightedChoice(range(len(scenario.zones)), [z.share for z in scenario.zones])
        operators = WeightedChoice(range(len(scenario.operators)),
                                   [o.share for o in scenario.operators])
        categories = WeightedChoice(range(len(scenario.categories)),
                                    [c.share for c in scenario.categories])
        for index in range(self.size):
            merchant = index >= self.people
            self.wallet_class[index] = scenario.merchant_class if merchant else classes[index]
            self.zone[index] = zones.pick(rng)
            self.operator[index] = operators.pick(rng)
            self.category[index] = categories.pick(rng) if merchant else 0

    def _by_zone(self, indices: range) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in self.zone_codes]
        for index in indices:
            groups[self.zone[index]].append(index)
        return groups

    def is_merchant(self, index: int) -> bool:
        return index >= self.people

    def wallet_id(self, index: int) -> str:
        if index < self.people:
            return f"p{index:07d}"
        return f"m{index - self.people:06d}"

    def zone_code(self, index: int) -> str:
        return self.zone_codes[self.zone[index]]

    def operator_code(self, index: int) -> str:
        return self.operator_codes[self.operator[index]]

    def next_sequence(self, index: int) -> int:
        self.sequence[index] += 1
        return self.sequence[index]

    def served_by(self, operator: int) -> list[int]:
        """How many wallets each zone has at ``operator`` (for the issuance orders)."""
        counts = [0] * len(self.zone_codes)
        for index in range(self.size):
            if self.operator[index] == operator:
                counts[self.zone[index]] += 1
        return counts

    def opening(self, index: int) -> OpenWallet:
        """The account-opening request for wallet ``index``: evidence enough for its class."""
        wallet_class = self.wallet_class[index]
        merchant = self.is_merchant(index)
        holder = Holder(
            phone=f"+861{index:010d}",
            id_document=f"ID{index:010d}" if wallet_class <= 3 else None,
            bank_account=f"BA{index:012d}" if wallet_class <= 2 else None,
            in_person=wallet_class == 1,
        )
        mcc = self.scenario.categories[self.category[index]].mcc if merchant else None
        return OpenWallet(
            wallet_id=self.wallet_id(index),
            operator_code=self.operator_code(index),
            zone=self.zone_code(index),
            wallet_class=wallet_class,
            holder=holder,
            public_key_hex=self.keys[index].public_key_hex,
            merchant_category_code=mcc,
        )
