"""DFT: financial transactions (FT1), with the clinical lists the message carries."""

from __future__ import annotations

import functools

from engine.record import schema
from engine.record.apply.common import Application
from engine.record.extract import KEEP
from engine.record.values import transaction_id, transaction_values

__all__ = ["DftApplication"]

# What identifies a transaction that has no FT1-2 id.
_CONTENT_KEY = (
    "patient_id",
    "visit_id",
    "transaction_at",
    "code",
    "quantity",
    "amount",
    "transaction_type",
)


class DftApplication(Application):
    """Charges and payments posted (P03) or their details (P11)."""

    code = "DFT"
    triggers = frozenset({"P03", "P11"})

    def apply(self) -> int:
        group = self.facts.patients[0]
        patient_id = self.patient(group)
        visit_id = self.visit_of(patient_id, group)
        self.clinical(group, patient_id, visit_id)
        t = schema.transactions
        for ft1 in group.transactions:
            number = transaction_id(ft1)
            if isinstance(number, str):
                read = functools.partial(
                    transaction_values, ft1, self.local, patient_id=patient_id, visit_id=visit_id
                )
                self.upsert(t, {"patient_id": patient_id, "transaction_id": number}, read)
                continue
            # Without FT1-2 a charge is what it says: the same one sent again is the same charge.
            values = transaction_values(ft1, self.local, patient_id=patient_id, visit_id=visit_id)
            key = {name: None if values[name] in (KEEP, "") else values[name] for name in _CONTENT_KEY}
            key["transaction_id"] = None
            self.upsert(t, key, lambda values=values: values)
        return patient_id
