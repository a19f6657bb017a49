"""ADT: registrations, visits (admit, transfer, discharge and their cancels), merges, links and ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.errors import RecordError
from engine.record import schema
from engine.record.apply.common import Application
from engine.record.extract import KEEP, PatientGroup
from engine.record.identity import Identifier, pid_identifiers, prior_identifiers, survivor_of
from engine.record.merging import LINK_KINDS, contradiction, set_moved, unmerge
from engine.record.values import visit_status, visit_values
from engine.record.writer import Differs, Writer

__all__ = ["AdtApplication", "IdentityApplication", "LinkApplication", "MergeApplication"]

# The triggers that admit (or plan) a visit, and the status they give it.
_ADMITS = {"A01": "in-progress", "A04": "in-progress", "A05": "planned"}


class AdtApplication(Application):
    """Registrations and updates of a patient, and the life of a visit (PV1)."""

    code = "ADT"
    triggers = frozenset({*_ADMITS, "A02", "A03", "A08", "A11", "A12", "A13", "A28", "A31"})

    def apply(self) -> int:
        group = self.facts.patients[0]
        trigger = self.facts.trigger
        patient_id = self.patient(group)
        visit_id = None
        if trigger not in ("A28", "A31") and group.pv1 is not None:
            visit_id = self._visit(patient_id, group, trigger)
        if trigger not in ("A11", "A12", "A13"):
            self.clinical(group, patient_id, visit_id)
        return patient_id

    def _visit(self, patient_id: int, group: PatientGroup, trigger: str) -> int | None:
        """Apply the PV1 to its visit (by number, else the latest) as the trigger says; its id or None."""
        values = visit_values(group.pv1, group.pv2, self.local, pid=group.pid)
        creating = trigger in _ADMITS or trigger in ("A02", "A03")
        visit = self.find_visit(patient_id, values["visit_number"], latest=trigger not in _ADMITS)
        if visit is None and trigger in _ADMITS and not isinstance(values["visit_number"], str):
            visit = self._same_visit(patient_id, values, trigger)
        if trigger in ("A11", "A12", "A13") and visit is None:
            self.notes.append(f"no visit to cancel for {trigger}")
            return None
        if visit is not None and self.writer.is_stale(visit):
            self.notes.append(f"visit {visit['id']} kept: the message is older than the record")
            return visit["id"]
        if trigger in _ADMITS:
            if visit is None or visit["status"] == "planned" or trigger != "A05":
                values["status"] = _ADMITS[trigger]
            if (
                trigger == "A01"
                and values["admitted_at"] is KEEP
                and (visit is None or visit["admitted_at"] is None)
            ):
                values["admitted_at"] = self.facts.message_time
        elif trigger == "A02":
            values["status"] = "in-progress"
            if values["prior_location"] is KEEP and visit is not None:
                values["prior_location"] = _location_text(visit)
        elif trigger == "A03":
            values["status"] = "finished"
            if values["discharged_at"] is KEEP:
                values["discharged_at"] = self.facts.message_time
        elif trigger == "A11":
            values = {"status": "cancelled"}
        elif trigger == "A12":
            values = {name: values[name] for name in ("point_of_care", "room", "bed", "facility")}
            values["prior_location"] = None
        elif trigger == "A13":
            values = {"status": "in-progress", "discharged_at": None}
        if visit is None:
            if not creating and values["visit_number"] in (KEEP, None):
                return None
            values.setdefault("status", visit_status(values))
            return self.writer.insert(schema.visits, {**values, "patient_id": patient_id})
        self.writer.update(schema.visits, visit, values)
        return visit["id"]

    def _same_visit(self, patient_id: int, values: dict[str, Any], trigger: str) -> dict[str, Any] | None:
        """The visit an admit without PV1-19 is about: same class and admit time, else class, location, day.

        With an admit time (PV1-44; an A01's message time without it) any visit of the patient not
        cancelled, of the same class, admitted then; without one an open (planned or in-progress)
        visit of the same class and location last confirmed on the message's day. So a resent
        registration finds the visit it made instead of making another.
        """
        admitted = values["admitted_at"]
        if admitted is KEEP and trigger == "A01":
            admitted = self.facts.message_time
        place = ("point_of_care", "room", "bed", "facility")
        # Only a visit of the class (and admit time, or place) can be it: the rest of the patient's
        # visits (one more each admission) are not read. The loop below still compares them as
        # sent: a value cut to fit its column is compared whole (and matches none).
        key = {
            "patient_id": patient_id,
            "status": Differs("cancelled"),
            "merged_into_id": None,
            "patient_class": _sent(values["patient_class"]),
        }
        if isinstance(admitted, datetime):
            key["admitted_at"] = admitted
        else:
            key.update((name, _sent(values[name])) for name in place)
        candidates = self.writer.rows(schema.visits, key, descending=True)
        for visit in candidates:
            if visit["patient_class"] != _sent(values["patient_class"]):
                continue
            if isinstance(admitted, datetime):
                if visit["admitted_at"] == admitted:
                    return visit
            elif (
                visit["status"] in ("planned", "in-progress")
                and all(visit[name] == _sent(values[name]) for name in place)
                and visit["as_of"].astimezone(self.local).date()
                == self.facts.message_time.astimezone(self.local).date()
            ):
                return visit
        return None


def _sent(value: Any) -> Any:
    """A read value as a row holds it: KEEP (not sent) and empty are NULL."""
    return None if value is KEEP or value == "" else value


def _location_text(visit: sa.RowMapping) -> str | None:
    parts = [visit["point_of_care"], visit["room"], visit["bed"], visit["facility"]]
    return " ".join(part for part in parts if part) or None


class MergeApplication(Application):
    """A merge (A18, A34, A39, A40): the MRG's prior patient and identifiers move to the PID's patient.

    A merge already done (every prior identifier is the survivor's) is a no-op: no second row.
    """

    code = "ADT"
    triggers = frozenset({"A18", "A34", "A39", "A40"})

    def apply(self) -> int:
        groups = [group for group in self.facts.patients if group.mrg is not None]
        if not groups:
            raise RecordError(f"{self.facts.event} has no MRG segment: nothing says which patient to merge")
        survivor = None
        for group in groups:
            survivor = self.patient(group)
            self._merge_prior(survivor, prior_identifiers(group.mrg, self.facts))
        return survivor

    def _merge_prior(self, survivor: int, priors: list[Identifier]) -> None:
        if not priors:
            raise RecordError("MRG-1 names no prior identifier")
        i = schema.identifiers
        keys = [(p.authority, p.value) for p in priors]
        by_key = {(row["authority"], row["value"]): row for row in _identifier_rows(self.writer, keys)}
        owners: list[int] = []
        for key in keys:
            if key in by_key:
                owner = survivor_of(self.writer, by_key[key]["patient_id"])["id"]
                if owner not in owners:
                    owners.append(owner)
        if len(by_key) == len(keys) and owners == [survivor]:
            self.notes.append("merge already done: every prior identifier is the survivor's")
            return
        prior_patient = next((owner for owner in owners if owner != survivor), None)
        for other in owners:
            if other not in (survivor, prior_patient):
                self.flag(
                    "merge_ambiguous",
                    survivor,
                    other,
                    f"MRG-1 names identifiers of patients {prior_patient} and {other};"
                    f" only {prior_patient} was merged",
                )
        merge_id = self.merge(
            survivor,
            prior_patient,
            kind="merge",
            reason=f"{self.facts.event} from {self.facts.source_system}",
            priors=[list(key) for key in keys],
        )
        moved = self.writer.select_one(schema.merges, {"id": merge_id})["moved"]
        created = []
        for prior in priors:
            row = by_key.get((prior.authority, prior.value))
            if row is None:
                # An unknown prior id is an alias of the survivor only: a later message under it that
                # contradicts the survivor is a conflict (Application._alias_contradicted).
                created.append(self.link(prior, survivor, f"merge {merge_id}: prior identifier", alias=True))
            elif (
                survivor_of(self.writer, row["patient_id"])["id"] == survivor
                and not row["alias"]
                and row["id"] not in moved.get(i.name, [])
            ):
                self.writer.update(i, row, {"alias": True}, cause=f"merge {merge_id}")
        set_moved(self.writer, merge_id, {**moved, "created_identifiers": created})
        self.notes.append(
            f"merge {merge_id}"
            + (
                f": patient {prior_patient} merged"
                if prior_patient is not None
                else ": prior identifiers kept as aliases"
            )
        )


def _identifier_rows(writer: Writer, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The record_identifiers rows of these (authority, value) keys."""
    return writer.rows(schema.identifiers, *({"authority": a, "value": v} for a, v in keys))


class LinkApplication(Application):
    """A24 links the patients of its two PIDs (a reversible link); A37 undoes the link between them."""

    code = "ADT"
    triggers = frozenset({"A24", "A37"})

    def apply(self) -> int:
        if len(self.facts.patients) < 2:
            raise RecordError(f"{self.facts.event} needs two PID segments: the patients to (un)link")
        first, second = self.facts.patients[:2]
        if self.facts.trigger == "A37":
            return self._unlink(first, second)
        one, other = self.patient(first), self.patient(second)
        one, other = survivor_of(self.writer, one), survivor_of(self.writer, other)
        if one["id"] == other["id"]:
            self.notes.append("already one patient: nothing to link")
            return one["id"]
        differs = contradiction(one, other)
        if differs:
            self.flag(
                "link_contradicted",
                one["id"],
                other["id"],
                f"A24 links patients {one['id']} and {other['id']}, whose {differs} differ; not linked",
            )
            return one["id"]
        self.links.append(
            (one["id"], other["id"], "link", f"A24 from {self.facts.source_system} links the two PIDs")
        )
        return one["id"]

    def _unlink(self, first: PatientGroup, second: PatientGroup) -> int:
        """Undo the link (merge of a LINK_KINDS kind) that took the second PID's identifiers, if any."""
        keys = [(i.authority, i.value) for i in pid_identifiers(second.pid, self.facts)]
        rows = _identifier_rows(self.writer, keys)
        survivor = self.patient(first)
        ids = {row["id"] for row in rows}
        m = schema.merges
        merges = self.writer.connection.execute(
            sa.select(m.c.id, m.c.moved)
            .where(m.c.survivor_id == survivor, m.c.unmerged_at.is_(None), m.c.kind.in_(LINK_KINDS))
            .order_by(m.c.id.desc())
        ).all()
        for merge_id, moved in merges:
            if ids & set(moved.get(schema.identifiers.name, [])):
                unmerge(self.writer, merge_id, f"A37 from {self.facts.source_system}", links_only=True)
                self.notes.append(f"merge {merge_id} undone (unlinked)")
                return survivor
        self.notes.append("no link between the two PIDs to undo")
        return survivor


class IdentityApplication(Application):
    """A47 changes an identifier (MRG-1 to the PID's), A45 moves a visit (MRG-5) to the PID's patient,
    A41 merges the prior account (MRG-3) into the PID's (PID-18), A42 the prior visit (MRG-5) into
    the PV1's (PV1-19). Each is a no-op once done.
    """

    code = "ADT"
    triggers = frozenset({"A41", "A42", "A45", "A47"})

    def apply(self) -> int:
        group = self.facts.patients[0]
        if group.mrg is None:
            raise RecordError(f"{self.facts.event} has no MRG segment")
        if self.facts.trigger == "A47":
            self._change_identifier(group)
        patient_id = self.patient(group)
        if self.facts.trigger == "A45":
            self._move_visit(group, patient_id)
        elif self.facts.trigger == "A41":
            self._merge_account(group, patient_id)
        elif self.facts.trigger == "A42":
            self._merge_visit(group, patient_id)
        return patient_id

    def _merge_account(self, group: PatientGroup, patient_id: int) -> None:
        """The patient's visits of the prior account (MRG-3) take the surviving one (PID-18)."""
        prior, survivor = group.mrg.part("3.1"), group.pid.part("18.1")
        if not prior or not survivor:
            raise RecordError("A41 needs MRG-3 (the prior account number) and PID-18 (the surviving one)")
        v = schema.visits
        visits = self.writer.rows(v, {"patient_id": patient_id, "account_number": prior})
        for visit in visits:
            self.writer.update(v, visit, {"account_number": survivor})
        self.notes.append(
            f"visits {', '.join(str(visit['id']) for visit in visits)} moved to the surviving account"
            if visits
            else "no visit of the prior account: nothing to move"
        )

    def _merge_visit(self, group: PatientGroup, patient_id: int) -> None:
        """The prior visit's (MRG-5) facts move to the surviving visit (PV1-19), or it takes that number.

        The prior visit keeps its row, merged into the survivor, so late messages naming it reach it.
        """
        prior_number = group.mrg.part("5.1")
        number = group.pv1.part("19.1") if group.pv1 is not None else None
        if not prior_number or not number:
            raise RecordError("A42 needs MRG-5 (the prior visit number) and PV1-19 (the surviving one)")
        v = schema.visits
        prior = self.writer.select_one(
            v, {"patient_id": patient_id, "visit_number": prior_number, "merged_into_id": None}
        )
        survivor = self.find_visit(patient_id, number, latest=False)
        if prior is None or (survivor is not None and survivor["id"] == prior["id"]):
            self.notes.append("no visit of the prior number left to merge")
            return
        if survivor is None:
            self.writer.update(v, prior, {"visit_number": number})
            self.notes.append(f"visit {prior['id']} renumbered")
            return
        for table in schema.FACT_TABLES:
            if "visit_id" in table.c:
                self.writer.connection.execute(
                    table.update().where(table.c.visit_id == prior["id"]).values(visit_id=survivor["id"])
                )
        self.writer.update(v, prior, {"merged_into_id": survivor["id"]})
        self.notes.append(f"visit {prior['id']} merged into visit {survivor['id']}")

    def _change_identifier(self, group: PatientGroup) -> None:
        """Give the MRG-1 identifier row the PID-3 value, unless that one is already someone's."""
        priors = prior_identifiers(group.mrg, self.facts)
        news = pid_identifiers(group.pid, self.facts)
        if not priors or not news:
            raise RecordError("A47 needs MRG-1 (the old identifier) and PID-3 (the new one)")
        old, new = priors[0], news[0]
        rows = _identifier_rows(self.writer, [(old.authority, old.value), (new.authority, new.value)])
        by_key = {(row["authority"], row["value"]): row for row in rows}
        row = by_key.get((old.authority, old.value))
        if row is None:
            self.notes.append("MRG-1 is not known: the PID identifies its patient")
            return
        taken = by_key.get((new.authority, new.value))
        if taken is not None:
            if (
                survivor_of(self.writer, taken["patient_id"])["id"]
                != survivor_of(self.writer, row["patient_id"])["id"]
            ):
                self.flag(
                    "identifier_taken",
                    row["patient_id"],
                    taken["patient_id"],
                    "A47 gives an identifier another patient holds; not changed",
                    new,
                )
            return
        self.writer.update(
            schema.identifiers,
            row,
            {"authority": new.authority, "value": new.value, "type_code": new.type_code},
        )
        self.notes.append(f"identifier {row['id']} changed")

    def _move_visit(self, group: PatientGroup, patient_id: int) -> None:
        """Move the MRG-5 visit (of the MRG-1 patient when known) and what points at it to the patient."""
        number = group.mrg.part("5.1")
        if not number:
            raise RecordError("A45 needs MRG-5, the visit number to move")
        v = schema.visits
        visit = self.writer.select_one(v, {"visit_number": number})
        if visit is None:
            self.notes.append("no visit of that number to move")
            return
        if visit["patient_id"] == patient_id:
            self.notes.append(f"visit {visit['id']} is the patient's already")
            return
        self.writer.update(v, visit, {"patient_id": patient_id})
        for table in schema.FACT_TABLES:
            if "visit_id" in table.c:
                self.writer.connection.execute(
                    table.update().where(table.c.visit_id == visit["id"]).values(patient_id=patient_id)
                )
        self.notes.append(f"visit {visit['id']} moved")
