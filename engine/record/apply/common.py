"""What every family of messages shares when it is applied: the patient, its visit, its clinical lists.

An ``Application`` applies one message's facts through one Writer. Each family (``adt``, ``siu``,
``oru``, ``dft``) is a subclass that says which events it applies (``code``, ``triggers``) and how
(``apply``); ``run`` gives what the ingestor records of it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar

import sqlalchemy as sa

from engine.errors import RecordError
from engine.hl7.dtm import parse_timestamp
from engine.record import schema
from engine.record.extract import KEEP, MessageFacts, PatientGroup, SegmentReader
from engine.record.identity import (
    Conflict,
    Identifier,
    IdentityRule,
    Match,
    corroboration,
    find_by_rule,
    find_known,
    national_ids,
    national_ids_of,
    pid_identifiers,
    possible_duplicate,
    survivor_of,
)
from engine.record.merging import contradiction, merge_patients
from engine.record.values import (
    allergy_values,
    coded_key,
    contact_values,
    coverage_values,
    described,
    diagnosis_values,
    pid_values,
    rule_demographics,
    sent_demographics,
    visit_number,
    visit_status,
    visit_values,
)
from engine.record.writer import Differs, Writer, list_digest

__all__ = ["Application"]


def _instant(moment: datetime) -> str:
    """A time as ``record_patients.sent_at`` holds it: UTC ISO text with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


# The link reason of an unknown prior id a merge kept as an alias of the survivor (adt.MergeApplication).
_KEPT_PRIOR = re.compile(r"merge \d+: prior identifier")


class Application:
    """Applies one message's facts through one Writer; ``run`` returns (patient id, applied, detail)."""

    code: ClassVar[str]  # MSH-9.1 of the messages the family applies
    triggers: ClassVar[frozenset[str]]  # and their MSH-9.2 (or EVN-1)

    def __init__(
        self,
        writer: Writer,
        facts: MessageFacts,
        rule: IdentityRule | None,
        local: tzinfo,
        trust: frozenset[str] | None = None,
    ):
        """``trust``: the senders (MSH-3) whose cross-references link patients; None trusts all."""
        self.writer = writer
        self.facts = facts
        self.rule = rule
        self.local = local
        self.trust = trust
        self.notes: list[str] = []
        # (survivor, prior, kind, reason) to merge once the message's facts are applied
        self.links: list[tuple[int, int, str, str]] = []

    def run(self) -> tuple[int | None, bool, str]:
        """Apply the message: (its patient's id, whether it was applied, the detail recorded)."""
        if not self.facts.patients:
            return None, False, f"{self.facts.event} has no PID: nothing for the record"
        patient_id = self.apply()
        # Links go last: the message's facts are on its own patient first, so that a link undone
        # (unlink) takes them back with it.
        for survivor, prior, kind, reason in self.links:
            survivor = survivor_of(self.writer, survivor)["id"]
            prior = survivor_of(self.writer, prior)["id"]
            if survivor != prior:
                merge_id = self.merge(survivor, prior, kind=kind, reason=reason)
                self.notes.append(f"merge {merge_id}: patient {prior} linked ({kind})")
        if self.links:
            patient_id = survivor_of(self.writer, patient_id)["id"]
        return patient_id, True, "; ".join([f"patient {patient_id}", *self.notes])

    def apply(self) -> int:
        """Apply the facts of a message with at least one PID; returns the id of its (first) patient."""
        raise NotImplementedError

    def merge(self, survivor: int, prior: int | None, *, kind: str, reason: str, priors=None) -> int:
        """Merge ``prior`` into ``survivor`` with this message's provenance; the merge's id."""
        return merge_patients(
            self.writer,
            survivor,
            prior,
            event=self.facts.trigger,
            kind=kind,
            reason=f"{reason} (message {self.writer.message_id})",
            source_system=self.facts.source_system,
            prior_identifiers=priors,
        )

    # -- patients and identity -----------------------------------------------------------------

    def patient(self, group: PatientGroup) -> int:
        """Resolve (or create) the PID's patient, link new identifiers, apply demographics unless stale."""
        pid = group.pid
        identifiers = pid_identifiers(pid, self.facts)
        # The PID's demographics are read only when used: a message older than the record (a resend)
        # leaves them unread.
        read = None
        match = find_known(self.writer, identifiers)
        if match is not None:
            patient = match.patient or self.writer.select_one(schema.patients, {"id": match.patient_id})
            if not self.writer.is_stale(patient):
                read = pid_values(pid, self.local)
                match = self._alias_contradicted(match, patient, read[0], identifiers)
            self._cross_references(match)
        else:
            read = values, lists = pid_values(pid, self.local)
            demographics = rule_demographics(values, lists)
            if not identifiers and not any(demographics.values()):
                raise RecordError("the PID names no identifier (PID-2/3/4) and no demographics")
            match = find_by_rule(self.writer, identifiers, demographics, self.rule)
            if match.patient_id is not None:
                match = self._ruled(match, national_ids(values["ssn"], identifiers), lists)
        if match.patient_id is None:
            values, lists = read
            sent = self._sent_lists(group, lists)
            digests = {table: list_digest(rows) for table, rows in sent.items()} or None
            patient_id = self.writer.insert(
                schema.patients,
                {
                    **values,
                    "created_at": self.writer.now,
                    "updated_at": self.writer.now,
                    "list_digests": digests,
                    "sent_at": self._sent_at({}, values, sent),
                },
            )
            for table, rows in sent.items():
                self.writer.replace_list(schema.TABLES[table], patient_id, rows, new_patient=True)
            reason = (
                "registered by this message"
                if not match.conflicts
                else "registered by this message (identity conflict flagged)"
            )
            for survivor, kind, why in match.links:
                self.links.append((survivor, patient_id, kind, why))
        else:
            patient_id = match.patient_id
            reason = match.reason
            patient = match.patient or self.writer.select_one(schema.patients, {"id": patient_id})
            self._demographics(group, patient, read)
            for other, kind, why in match.links:
                self.links.append((patient_id, other, kind, why))
        self.writer.insert_many(
            schema.identifiers,
            (
                self._link_row(identifier, patient_id, reason, alias=False)
                for identifier in identifiers
                if (identifier.authority, identifier.value) not in match.known
            ),
        )
        for conflict in match.conflicts:
            self.flag(
                conflict.kind, patient_id, conflict.other_patient_id, conflict.detail, conflict.identifier
            )
        return patient_id

    def _demographics(self, group: PatientGroup, patient: dict[str, Any], read: tuple | None) -> None:
        """Apply the PID's (and NK1s') demographics to a known patient, field by field by message time.

        A message older than the patient's row writes only the fields and lists that no newer
        message sent (``sent_at``); a row without ``sent_at`` (written before it) is left whole.
        """
        fresh = None
        if self.writer.is_stale(patient):
            fresh = self._unsent_since(group, patient["sent_at"])
            if not fresh:
                self.notes.append("demographics kept: the message is older than the record")
                return
        values, lists = read or pid_values(group.pid, self.local)
        sent = self._sent_lists(group, lists, fresh)
        if fresh is not None:
            values = {name: value for name, value in values.items() if name in fresh}
            self.notes.append("demographics older than the record: only fields no newer message sent applied")
        known = patient["list_digests"] or {}
        digests = {**known, **{table: list_digest(rows) for table, rows in sent.items()}} or None
        times = patient["sent_at"]
        if times is None:  # written before sent_at: its as_of stands for every field
            times = dict.fromkeys(schema.DEMOGRAPHICS, _instant(patient["as_of"]))
        self.writer.update(
            schema.patients,
            patient,
            values,
            unrecorded={"list_digests": digests, "sent_at": self._sent_at(times, values, sent)},
        )
        for table, rows in sent.items():
            # A list stored as sent already is not read to find that out.
            if known.get(table) != digests[table]:
                self.writer.replace_list(schema.TABLES[table], patient["id"], rows)

    def _unsent_since(self, group: PatientGroup, times: dict[str, str] | None) -> set[str]:
        """The demographics the group sends that no newer message sent (none without ``times``)."""
        if times is None:
            return set()
        # sent_at's times are all _instant's text, which compares as the times do.
        at = _instant(self.writer.message_time)
        return {
            name
            for name in sent_demographics(group)
            # A field last sent at this message's time was (most likely) sent by this message: a resend.
            if name not in times or times[name] < at
        }

    def _sent_at(self, times: dict[str, str], values: dict[str, Any], sent: dict[str, Any]) -> dict[str, str]:
        """``times`` with this message's time for each column and list it writes."""
        at = _instant(self.writer.message_time)
        written = [name for name in schema.DEMOGRAPHICS if values.get(name, KEEP) is not KEEP or name in sent]
        return {**times, **dict.fromkeys(written, at)}

    def _trusts(self) -> bool:
        """Whether the sender's cross-references (identifiers listed together) link patients."""
        return self.trust is None or self.facts.source_system in self.trust

    def _cross_references(self, match: Match) -> None:
        """Turn the PID's identifiers of other patients into links, unless untrusted or contradicted."""
        if not match.conflicts or not self._trusts():
            return
        kept = []
        for conflict in match.conflicts:
            other = match.others.get(conflict.other_patient_id)
            differs = contradiction(match.patient, other) if other is not None else "patient"
            if conflict.kind != "identifiers_disagree" or differs:
                if differs and conflict.kind == "identifiers_disagree":
                    conflict = Conflict(
                        conflict.kind,
                        conflict.other_patient_id,
                        f"{conflict.detail}: their {differs} differ",
                        conflict.identifier,
                    )
                kept.append(conflict)
                continue
            match.links.append(
                (
                    conflict.other_patient_id,
                    "cross_reference",
                    f"{self.facts.source_system} lists identifiers of patients {match.patient_id}"
                    f" and {conflict.other_patient_id} in one PID",
                )
            )
        match.conflicts = kept

    def _alias_contradicted(
        self, match: Match, patient: dict[str, Any], values: dict[str, Any], identifiers: list[Identifier]
    ) -> Match:
        """A new patient, flagged, when the PID names its patient only by prior ids a merge kept though
        unknown (``merge N: prior identifier``), and its birth date, sex or SSN contradicts the patient's.
        """
        differs = contradiction(values, patient)
        if differs is None:
            return match
        i = schema.identifiers
        keys = [(identifier.authority, identifier.value) for identifier in identifiers]
        found = self.writer.connection.execute(
            sa.select(i.c.alias, i.c.link_reason).where(sa.tuple_(i.c.authority, i.c.value).in_(keys))
        ).all()
        if not all(alias and _KEPT_PRIOR.match(reason) for alias, reason in found):
            return match
        first = next(one for one in identifiers if (one.authority, one.value) in match.known)
        return Match(
            None,
            "new patient",
            match.known,  # the prior identifiers stay the survivor's
            conflicts=[
                Conflict(
                    "alias_contradicts",
                    match.patient_id,
                    f"the PID names patient {match.patient_id} by a prior identifier only, and its {differs}"
                    " differs; a new patient was created",
                    first,
                )
            ],
        )

    def _ruled(self, match: Match, ssns: set[str], lists: dict[str, Any]) -> Match:
        """The identity rule's one candidate: a link (after this message) when corroborated or not strict.

        An SSN of the PID (``ssns``: PID-19, PID-3 of type SS) that the candidate has corroborates;
        one that contradicts the candidate's makes a possible duplicate, strict or not, as a strict
        rule without corroboration does; either way a new patient.
        """
        candidate = match.patient_id
        theirs = national_ids_of(self.writer, self.writer.select_one(schema.patients, {"id": candidate}))
        if ssns and theirs and not ssns & theirs:
            return possible_duplicate(candidate, "whose SSN differs", self.rule)
        corroborated = "SSN" if ssns & theirs else corroboration(self.writer, candidate, lists)
        if self.rule.strict and corroborated is None:
            return possible_duplicate(
                candidate, "with nothing to corroborate it (SSN, phone, address, identifier)", self.rule
            )
        why = f"identity rule {self.rule.name} matched patient {candidate}" + (
            f", corroborated by {corroborated}" if corroborated else ""
        )
        return Match(None, "new patient", links=[(candidate, "rule", why)])

    def link(self, identifier: Identifier, patient_id: int, reason: str, *, alias: bool) -> int:
        """Link ``identifier`` to the patient; returns the identifier row's id."""
        return self.writer.insert(
            schema.identifiers, self._link_row(identifier, patient_id, reason, alias=alias)
        )

    def _link_row(
        self, identifier: Identifier, patient_id: int, reason: str, *, alias: bool
    ) -> dict[str, Any]:
        """The record_identifiers row linking ``identifier`` to the patient."""
        return {
            "patient_id": patient_id,
            "authority": identifier.authority,
            "value": identifier.value,
            "type_code": identifier.type_code,
            "source_system": self.facts.source_system,
            "alias": alias,
            "link_reason": f"{reason} (message {self.writer.message_id})",
            "linked_at": self.writer.now,
        }

    def flag(
        self,
        kind: str,
        patient_id: int | None,
        other: int | None,
        detail: str,
        identifier: Identifier | None = None,
    ) -> None:
        """Record an identity conflict and say so in the detail."""
        self.writer.add(
            schema.conflicts,
            {
                "kind": kind,
                "patient_id": patient_id,
                "other_patient_id": other,
                "detail": detail,
                "created_at": self.writer.now,
                "authority": identifier.authority if identifier else None,
                "value": identifier.value if identifier else None,
            },
        )
        self.notes.append(f"identity conflict flagged ({kind})")

    def _sent_lists(
        self, group: PatientGroup, lists: dict[str, Any], only: set[str] | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """The lists the message sends, as stored: names, addresses, telecoms (PID), contacts (NK1).

        ``only``: those of these lists (tables) alone.
        """
        sent = {
            table: self.writer.fit_list(schema.TABLES[table], rows)
            for table, rows in lists.items()
            if rows is not KEEP and (only is None or table in only)
        }
        if group.contacts and (only is None or schema.contacts.name in only):
            sent[schema.contacts.name] = self.writer.fit_list(
                schema.contacts, [contact_values(nk1) for nk1 in group.contacts]
            )
        return sent

    # -- appointment and order ids -------------------------------------------------------------

    def entity_id(self, segment: SegmentReader | None, n: int) -> tuple[str, str] | None:
        """An EI field's (id, namespace): the namespace is EI-2, else the sending application; None unsent."""
        number = segment.part_at(n, 1, 1) if segment is not None else None
        if number is None:
            return None
        return number, segment.part_at(n, 1, 2) or self.facts.source_system

    def held_by_other(
        self, row: dict[str, Any] | None, patient_id: int, what: str, key: tuple[str, str]
    ) -> bool:
        """Whether ``row`` (found by its namespaced id) is another patient's: a conflict then, not a move.

        The conflict names the id (``authority`` the namespace, ``value`` the id) and is flagged once
        while open, so a resend of the message adds none.
        """
        if row is None or row["patient_id"] == patient_id:
            return False
        number, namespace = key
        kind = f"{what}_other_patient"
        open_ = self.writer.select_one(
            schema.conflicts,
            {
                "kind": kind,
                "patient_id": patient_id,
                "other_patient_id": row["patient_id"],
                "authority": namespace,
                "value": number,
                "resolved_at": None,
            },
        )
        if open_ is None:
            self.flag(
                kind,
                patient_id,
                row["patient_id"],
                f"{what} {number} of {namespace} belongs to patient {row['patient_id']}:"
                f" this message's change of it was not applied",
                Identifier(namespace, number),
            )
        else:
            self.notes.append(f"identity conflict already open ({kind})")
        return True

    # -- visits --------------------------------------------------------------------------------

    def find_visit(self, patient_id: int, number: Any, *, latest: bool) -> sa.RowMapping | None:
        """The patient's visit of this number; without one, the latest not cancelled visit if ``latest``.

        A visit merged into another (A42) stands for the one it was merged into.
        """
        v = schema.visits
        if isinstance(number, str):
            visit = self.writer.select_one(v, {"patient_id": patient_id, "visit_number": number})
            seen = set()
            while visit is not None and visit["merged_into_id"] is not None and visit["id"] not in seen:
                seen.add(visit["id"])  # a cycle can only come from a bug; stop rather than loop
                visit = self.writer.select_one(v, {"id": visit["merged_into_id"]})
            return visit
        if not latest:
            return None
        found = self.writer.rows(
            v,
            {"patient_id": patient_id, "status": Differs("cancelled"), "merged_into_id": None},
            descending=True,
            limit=1,
        )
        return found[0] if found else None

    def visit_of(self, patient_id: int, group: PatientGroup) -> int | None:
        """The visit a non-ADT message's PV1 names by number (created when unknown); None without one."""
        if group.pv1 is None:
            return None
        number = visit_number(group.pv1)
        if not isinstance(number, str):
            return None
        visit = self.find_visit(patient_id, number, latest=False)
        if visit is not None:
            return visit["id"]
        values = visit_values(group.pv1, group.pv2, self.local, pid=group.pid)
        return self.writer.insert(
            schema.visits, {**values, "patient_id": patient_id, "status": visit_status(values)}
        )

    # -- clinical lists (AL1, DG1, PR1, IN1/IN2) -------------------------------------------------

    def clinical(self, group: PatientGroup, patient_id: int, visit_id: int | None) -> None:
        """Apply the patient group's allergies, diagnoses, procedures and coverages."""
        # The key first: the rest of a segment is read only for a row it writes.
        for al1 in group.allergies:
            code = al1.coded(3)
            self.upsert(
                schema.allergies,
                coded_key(code, patient_id=patient_id),
                functools.partial(allergy_values, al1, code),
            )
        for dg1 in group.diagnoses:
            code = described(dg1)
            self.upsert(
                schema.diagnoses,
                coded_key(code, patient_id=patient_id, visit_id=visit_id),
                functools.partial(diagnosis_values, dg1, code, self.local),
            )
        for pr1 in group.procedures:
            values = {**described(pr1), **pr1.columns(5, {"performed_at": ("5.1", self.time)})}
            key = coded_key(values, patient_id=patient_id, visit_id=visit_id)
            key["performed_at"] = values["performed_at"] or None
            self.upsert(schema.procedures, key, lambda values=values: values)
        for in1, in2 in group.insurances:
            values = coverage_values(in1, in2)
            key = {
                "patient_id": patient_id,
                **{name: values[name] or None for name in ("company_id", "plan_id", "policy_number")},
            }
            if not any(key[name] for name in ("company_id", "plan_id", "policy_number")):
                key["company_name"] = values["company_name"] or None
            self.upsert(schema.coverages, key, lambda values=values: values)

    def upsert(self, table: sa.Table, key: dict[str, Any], read: Callable[[], dict[str, Any]]) -> None:
        """Insert the row with this key, or update it unless the message is older than it.

        ``read`` gives the values (called only for a row that is written).
        """
        row = self.writer.select_one(table, key)
        if row is None:
            self.writer.add(table, {**read(), **key})
        elif self.writer.is_stale(row):
            self.notes.append(
                f"{table.name.removeprefix('record_')} {row['id']} kept: the message is older than the record"
            )
        else:
            self.writer.update(table, row, read())

    def time(self, text: str) -> datetime | None:
        """An HL7 time read in the local timezone when it has no offset."""
        return parse_timestamp(text, self.local)
