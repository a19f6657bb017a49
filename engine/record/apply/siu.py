"""SIU: appointments (SCH, TQ1) and their resources (AIS, AIG, AIL, AIP)."""

from __future__ import annotations

from engine.record import schema
from engine.record.apply.common import Application
from engine.record.extract import KEEP, SegmentReader
from engine.record.values import appointment_values, resource_rows

__all__ = ["SiuApplication"]

# The status each trigger sets (S12 and S13 book unless SCH-25 says otherwise; S14 keeps it).
# The columns of SCH-1 and SCH-2: the id and its namespace.
_PLACER = ("placer_id", "placer_namespace")
_FILLER = ("filler_id", "filler_namespace")

_STATUSES = {"S15": "Cancelled", "S16": "Dc", "S17": "Deleted", "S26": "Noshow"}


class SiuApplication(Application):
    """An appointment booked, rescheduled, modified, cancelled, discontinued, deleted or missed."""

    code = "SIU"
    triggers = frozenset({"S12", "S13", "S14", "S15", "S16", "S17", "S26"})

    def apply(self) -> int:
        facts = self.facts
        group = facts.patients[0]
        patient_id = self.patient(group)
        visit_id = self.visit_of(patient_id, group)
        placer = self.entity_id(facts.sch, 1)
        filler = self.entity_id(facts.sch, 2)
        if placer is None and filler is None:
            self.notes.append("no appointment recorded: no SCH-1/SCH-2 appointment identifier")
            return patient_id
        a = schema.appointments
        keys = [
            (dict(zip(names, sent, strict=True)), sent)
            for names, sent in ((_FILLER, filler), (_PLACER, placer))
            if sent is not None
        ]
        # One select for both ids: the appointment of the filler's, else of the placer's (lowest id).
        found = self.writer.rows(a, *(names for names, _ in keys))
        appointment, key = None, filler or placer
        for names, sent in keys:
            if appointment is None:
                appointment, key = self.writer.first(a, found, names), sent
        if self.held_by_other(appointment, patient_id, "appointment", key):
            return patient_id
        if appointment is not None and self.writer.is_stale(appointment):
            self.notes.append(f"appointment {appointment['id']} kept: the message is older than the record")
            return patient_id
        values = appointment_values(facts.sch, facts.tq1, facts.resources, self.local)
        values.update(patient_id=patient_id, event=facts.trigger)
        for names, sent in ((_PLACER, placer), (_FILLER, filler)):
            if sent is not None:
                values.update(zip(names, sent, strict=True))
        if visit_id is not None:
            values["visit_id"] = visit_id
        trigger = facts.trigger
        if trigger in _STATUSES:
            values["status"] = _STATUSES[trigger]
        elif trigger in ("S12", "S13") and values["status"] is KEEP:
            values["status"] = "Booked"
        if appointment is None:
            if values["status"] in (KEEP, None):
                values["status"] = "Booked"
            appointment_id = self.writer.insert(a, values)
        else:
            appointment_id = appointment["id"]
            self.writer.update(a, appointment, values)
        if facts.resources:
            self._replace_resources(appointment_id, facts.resources)
        self.clinical(group, patient_id, visit_id)
        return patient_id

    def _replace_resources(self, appointment_id: int, resources: list[SegmentReader]) -> None:
        """Replace the appointment's resources by the message's when they differ (old ones to history)."""
        r = schema.appointment_resources
        compared = ("kind", "code", "text", "role", "start_at", "duration_minutes")
        old = [
            {name: row[name] for name in compared}
            for row in self.writer.rows(r, {"appointment_id": appointment_id})
        ]
        new = resource_rows(resources, self.local)
        comparable = [{name: row[name] for name in compared} for row in new]
        if old == comparable:
            return
        self.writer.history(schema.appointments.name, appointment_id, "resources", old, comparable)
        self.writer.delete(r, {"appointment_id": appointment_id})
        self.writer.insert_many(r, ({**row, "appointment_id": appointment_id} for row in new))
