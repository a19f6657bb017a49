"""DFT: financial transactions (FT1), with the clinical lists the message carries."""

from __future__ import annotations

import functools

from engine.record import schema
from engine.record.apply.common import Application
from engine.record.values import transaction_id, transaction_values

__all__ = ["DftApplication"]


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
            read = functools.partial(
                transaction_values, ft1, self.local, patient_id=patient_id, visit_id=visit_id
            )
            number = transaction_id(ft1)
            if isinstance(number, str):
                self.upsert(t, {"patient_id": patient_id, "transaction_id": number}, read)
            else:
                self.writer.insert(t, read())
        return patient_id
