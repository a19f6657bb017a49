"""ORU: results, an order (OBR, ORC) and its observations (OBX) per patient group."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.record import schema
from engine.record.apply.common import Application
from engine.record.extract import KEEP, OrderGroup, SegmentReader
from engine.record.values import observation_code, observation_sub_id, observation_values, result_status
from engine.record.writer import Writer

__all__ = ["OruApplication"]

# OBX-11 / OBR-25 result statuses by strength: a weaker one never replaces a stronger one.
_FINAL_RANK = {"C": 3, "F": 2, "U": 2}
_CANCELLING = frozenset({"X", "D", "W"})
# The columns of an order's placer (OBR-2/ORC-2) and filler (OBR-3/ORC-3) number and namespace.
_PLACER = ("placer_number", "placer_namespace")
_FILLER = ("filler_number", "filler_namespace")


class OruApplication(Application):
    """Unsolicited results (R01, and v2.2's ORU without a trigger)."""

    code = "ORU"
    triggers = frozenset({"R01", ""})

    def apply(self) -> int:
        first = None
        for group in self.facts.patients:
            patient_id = self.patient(group)
            first = first if first is not None else patient_id
            visit_id = self.visit_of(patient_id, group)
            for order in group.orders:
                self._order(patient_id, visit_id, order)
        return first

    def _order(self, patient_id: int, visit_id: int | None, order: OrderGroup) -> None:
        obr, orc = order.obr, order.orc
        main = obr or orc
        filler = self.entity_id(obr, 3) or self.entity_id(orc, 3)
        placer = self.entity_id(obr, 2) or self.entity_id(orc, 2)
        values: dict[str, Any] = {"notes": "\n".join(order.notes) if order.notes else KEEP}
        for names, sent in ((_PLACER, placer), (_FILLER, filler)):
            if sent is not None:
                values.update(zip(names, sent, strict=True))
        if obr is not None:
            values.update(obr.coded(4))
            values.update(
                obr.columns_of(
                    (25, {"status": "25.1"}),
                    (7, {"observed_at": ("7.1", self.time)}),
                    (22, {"reported_at": ("22.1", self.time)}),
                )
            )
        if orc is not None:
            values.update(orc.columns(1, {"order_control": "1.1"}))
        provider_field = 16 if obr is not None else 12
        if main.sent(provider_field):
            values["ordering_provider_id"], values["ordering_provider_name"] = main.person(provider_field)
        if visit_id is not None:
            values["visit_id"] = visit_id
        o = schema.orders
        if filler or placer:
            # An order is found by its number in its namespace, whichever patient holds it.
            names, sent = (_FILLER, filler) if filler else (_PLACER, placer)
            key = dict(zip(names, sent, strict=True))
        else:
            key = {
                "patient_id": patient_id,
                "filler_number": None,
                "placer_number": None,
                "code": values.get("code") or None,
                "observed_at": values.get("observed_at") or None,
            }
        row = self.writer.select_one(o, key)
        if self.held_by_other(row, patient_id, "order", filler or placer):
            return
        if row is None:
            order_id = self.writer.insert(o, {**values, "patient_id": patient_id})
        else:
            order_id = row["id"]
            if not self._keeps(row, values.get("status"), "order"):
                self.writer.update(o, row, values)
        # An order created by this group has no observations but the group's; an existing one's are
        # read in one select.
        stored = (
            self.writer.rows(schema.observations, {"order_id": order_id})
            if row is not None and order.observations
            else []
        )
        group = _StoredObservations(stored)
        # Each observation of the group has its own key, so none can be one that the group inserts:
        # they go in together.
        new = [
            self._observation(
                patient_id, order_id, observation.obx, observation.notes, group, values.get("observed_at")
            )
            for observation in order.observations
        ]
        self.writer.insert_many(schema.observations, (values for values in new if values is not None))

    def _keeps(self, row: sa.RowMapping, incoming: Any, what: str) -> bool:
        """Whether ``row`` stays: the message is older, or a weaker result would replace a final one."""
        if self.writer.is_stale(row):
            self.notes.append(f"{what} {row['id']} kept: the message is older than the record")
            return True
        if (
            isinstance(incoming, str)
            and incoming not in _CANCELLING
            and _FINAL_RANK.get(incoming, 1) < _FINAL_RANK.get(row["status"] or "", 1)
        ):
            self.notes.append(f"{what} {row['id']} kept: status {incoming} does not replace {row['status']}")
            return True
        return False

    def _observation(
        self,
        patient_id: int,
        order_id: int,
        obx: SegmentReader,
        notes: list[str],
        group: _StoredObservations,
        order_time: Any,
    ) -> dict[str, Any] | None:
        """Update the observation this OBX names, or return the row to insert for it."""
        identity = observation_code(obx)
        code, text = identity["code"], identity["text"]
        sub_id = identity["sub_id"] = observation_sub_id(obx)
        seen = group.seen
        key = (code or text, sub_id)
        occurrence = seen[key] = seen.get(key, 0) + 1
        ob = schema.observations
        row = None
        if group.stored:
            coded = {"code": code} if code else {"code": None, "text": text}
            row = group.find(
                self.writer, {"order_id": order_id, "sub_id": sub_id, "occurrence": occurrence, **coded}
            )
        status = KEEP
        if row is not None:
            status = result_status(obx) or KEEP
            if self._keeps(row, status, "observation"):
                return None
        values = observation_values(obx, self.local, identity)
        values["notes"] = "\n".join(notes) if notes else None
        if values["observed_at"] in (KEEP, None) and isinstance(order_time, datetime):
            values["observed_at"] = order_time
        if row is None:
            return {**values, "order_id": order_id, "patient_id": patient_id, "occurrence": occurrence}
        values["status"] = status
        if status in _CANCELLING:
            self.writer.update(ob, row, {"status": status})
        else:
            self.writer.update(ob, row, values)
        group.updated.add(row["id"])
        return None


class _StoredObservations:
    """The observations an order had before this message's OBX group, and what the group did with them."""

    def __init__(self, stored: list[dict[str, Any]]):
        self.stored = stored
        # (code or text, sub id) -> how many OBX with it so far: the next one's occurrence
        self.seen: dict[tuple[Any, str], int] = {}
        self.updated: set[int] = set()

    def find(self, writer: Writer, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored observation ``key`` selects (lowest id); one the group updated is read again."""
        row = writer.first(schema.observations, self.stored, key)
        if row is not None and row["id"] in self.updated:
            return writer.select_one(schema.observations, key)
        return row
