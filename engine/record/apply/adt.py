"""ADT: registrations, visits (admit, transfer, discharge and their cancels) and merges of patients."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from engine.errors import RecordError
from engine.record import schema
from engine.record.apply.common import Application
from engine.record.extract import KEEP, PatientGroup
from engine.record.identity import Identifier, prior_identifiers, survivor_of
from engine.record.values import visit_status, visit_values
from engine.record.writer import Differs, Writer

__all__ = ["AdtApplication", "MergeApplication", "unmerge"]

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
        values = visit_values(group.pv1, group.pv2, self.local)
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
        candidates = self.writer.rows(
            schema.visits, {"patient_id": patient_id, "status": Differs("cancelled")}, descending=True
        )
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
    """A merge (A18, A34, A39, A40): the MRG's prior patient and identifiers move to the PID's patient."""

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
        rows = (
            self.writer.connection.execute(sa.select(i).where(sa.tuple_(i.c.authority, i.c.value).in_(keys)))
            .mappings()
            .all()
        )
        by_key = {(row["authority"], row["value"]): row for row in rows}
        owners: list[int] = []
        for key in keys:
            if key in by_key:
                owner = survivor_of(self.writer, by_key[key]["patient_id"])["id"]
                if owner not in owners:
                    owners.append(owner)
        priors_json = [list(key) for key in keys]
        moved: dict[str, list[int]] = {}
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
        merge_id = self.writer.insert(
            schema.merges,
            {
                "survivor_id": survivor,
                "prior_id": prior_patient,
                "prior_identifiers": priors_json,
                "event": self.facts.trigger,
                "merged_at": self.writer.now,
                "moved": {},
            },
        )
        if prior_patient is not None:
            moved = self._move(prior_patient, survivor, merge_id)
        created = []
        for prior in priors:
            row = by_key.get((prior.authority, prior.value))
            if row is None:
                created.append(self.link(prior, survivor, f"merge {merge_id}: prior identifier", alias=True))
            elif (
                survivor_of(self.writer, row["patient_id"])["id"] == survivor
                and not row["alias"]
                and row["id"] not in moved.get(i.name, [])
            ):
                self.writer.update(i, row, {"alias": True}, cause=f"merge {merge_id}")
        moved["created_identifiers"] = created
        self.writer.connection.execute(
            schema.merges.update().where(schema.merges.c.id == merge_id).values(moved=moved)
        )
        self.notes.append(
            f"merge {merge_id}"
            + (
                f": patient {prior_patient} merged"
                if prior_patient is not None
                else ": prior identifiers kept as aliases"
            )
        )

    def _move(self, prior: int, survivor: int, merge_id: int) -> dict[str, list[int]]:
        """Move every fact of ``prior`` to ``survivor`` (identifiers as aliases); the moved ids per table."""
        moved = {}
        for table in schema.FACT_TABLES:
            ids = list(
                self.writer.connection.execute(
                    sa.select(table.c.id).where(table.c.patient_id == prior)
                ).scalars()
            )
            if not ids:
                continue
            values: dict[str, Any] = {"patient_id": survivor}
            if table is schema.identifiers:
                values["alias"] = True
            self.writer.connection.execute(table.update().where(table.c.id.in_(ids)).values(**values))
            moved[table.name] = ids
        patient = self.writer.select_one(schema.patients, {"id": prior})
        self.writer.update(schema.patients, patient, {"merged_into_id": survivor}, cause=f"merge {merge_id}")
        c = schema.conflicts
        between = sa.or_(
            sa.and_(c.c.patient_id == prior, c.c.other_patient_id == survivor),
            sa.and_(c.c.patient_id == survivor, c.c.other_patient_id == prior),
        )
        self.writer.connection.execute(
            c.update()
            .where(between, c.c.resolved_at.is_(None))
            .values(resolved_at=self.writer.now, resolution=f"merged by merge {merge_id}")
        )
        return moved


def unmerge(writer: Writer, merge_id: int, reason: str) -> int:
    """Undo merge ``merge_id``: the rows it moved go back to the prior patient; returns how many moved."""
    m = schema.merges
    merge = writer.select_one(m, {"id": merge_id})
    if merge is None:
        raise RecordError(f"there is no merge {merge_id}")
    if merge["unmerged_at"] is not None:
        raise RecordError(f"merge {merge_id} was already undone")
    survivor, prior = merge["survivor_id"], merge["prior_id"]
    moved = 0
    tables = {table.name: table for table in schema.FACT_TABLES}
    for name, ids in merge["moved"].items():
        if not ids:
            continue
        if name == "created_identifiers":
            table = schema.identifiers
            result = writer.connection.execute(
                table.delete().where(table.c.id.in_(ids), table.c.patient_id == survivor)
            )
            moved += result.rowcount
            continue
        table = tables[name]
        values: dict[str, Any] = {"patient_id": prior}
        if table is schema.identifiers:
            values["alias"] = False
        result = writer.connection.execute(
            table.update().where(table.c.id.in_(ids), table.c.patient_id == survivor).values(**values)
        )
        moved += result.rowcount
    if prior is not None:
        patient = writer.select_one(schema.patients, {"id": prior})
        writer.update(schema.patients, patient, {"merged_into_id": None})
    writer.connection.execute(
        m.update().where(m.c.id == merge_id).values(unmerged_at=writer.now, unmerge_reason=reason)
    )
    writer.history(m.name, merge_id, "unmerged_at", None, writer.now)
    return moved
