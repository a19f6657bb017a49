"""Apply one HL7 message to the unified patient record, in one transaction (event semantics: docs/record.md).

``RecordIngestor.apply`` blocks: run it on the store's writer thread (``RecordDestination`` does).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa

from engine.errors import EngineError, StoreError
from engine.hl7.message import Message
from engine.model import require_aware, utc_now
from engine.record import schema
from engine.record.extract import (
    KEEP,
    MessageFacts,
    OrderGroup,
    PatientGroup,
    SegmentReader,
    parse_decimal,
    parse_partial_date,
    parse_timestamp,
    read_message,
)
from engine.record.identity import (
    DEFAULT_RULE,
    Identifier,
    IdentityRule,
    find_by_rule,
    find_known,
    normalise,
    pid_identifiers,
    prior_identifiers,
    survivor_of,
)
from engine.record.writer import Differs, Statements, Writer, list_digest
from engine.store.driver import store_errors

__all__ = ["IngestResult", "RecordError", "RecordIngestor"]


class RecordError(EngineError):
    """The message (or operator request) cannot be applied to the record as it is; resending it unchanged fails again."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What applying one message did; ``detail`` names ids and counts, never patient data."""

    message_id: int
    event: str
    patient_id: int | None
    applied: bool
    detail: str
    already_applied: bool = False


# OBX-11 / OBR-25 result statuses by strength: a weaker one never replaces a stronger one.
_FINAL_RANK = {"C": 3, "F": 2, "U": 2}
_CANCELLING = frozenset({"X", "D", "W"})

_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_ADMITS = {"A01": "in-progress", "A04": "in-progress", "A05": "planned"}
_MERGES = frozenset({"A18", "A34", "A39", "A40"})
_SIU_STATUS = {"S15": "Cancelled", "S16": "Dc", "S17": "Deleted", "S26": "Noshow"}
_SIU_EVENTS = frozenset({"S12", "S13", "S14", "S15", "S16", "S17", "S26"})
_RESOURCE_KINDS = {"AIS": "service", "AIG": "resource", "AIL": "location", "AIP": "personnel"}
# field numbers of (code, start, duration, duration units, role) in each resource segment
_RESOURCE_FIELDS = {
    "AIS": (3, 4, 7, 8, None),
    "AIG": (3, 8, 11, 12, 4),
    "AIL": (3, 6, 9, 10, 4),
    "AIP": (3, 6, 9, 10, 4),
}


class RecordIngestor:
    """Applies messages to the record (``apply``, ``apply_many``) and undoes merges (``unmerge``)."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        identity_rule: IdentityRule | None = DEFAULT_RULE,
        local_timezone: tzinfo = UTC,
        clock: Callable[[], datetime] = utc_now,
    ):
        self._engine = engine
        self._rule = identity_rule
        self._local = local_timezone
        self._clock = clock
        self._statements = Statements(engine.dialect)

    @property
    def engine(self) -> sa.Engine:
        """The database the record lives in."""
        return self._engine

    def apply(self, message_id: int, message: Message, received_at: datetime) -> IngestResult:
        """Apply the message stored as ``message_id`` in its own transaction; the same id a second time changes nothing.

        Raises RecordError when the content cannot be applied, StoreError when the database fails.
        """
        (result,) = self.apply_many([(message_id, message, received_at)])
        if isinstance(result, Exception):
            raise result
        return result

    def apply_many(
        self, messages: Sequence[tuple[int, Message, datetime]]
    ) -> list[IngestResult | EngineError]:
        """Apply stored messages ``(message id, message, received at)`` in order, together in one transaction; one result each.

        A message that cannot be applied gets its error in its place (RecordError for its content,
        StoreError when the database refuses its rows) and leaves no trace: the transaction is
        rolled back and the others are applied again without it, so each ends as if applied alone.
        Raises StoreError when the database itself fails (locked, unreachable): nothing is applied.
        """
        for _, _, received_at in messages:
            require_aware(received_at, "received_at")
        results: list[IngestResult | EngineError] = []
        pending = list(messages)
        marked_each = False
        while pending:
            try:
                results.extend(self._apply_together(pending, marked_each=marked_each))
                break
            except _Refused as refused:
                results.extend(self.apply_many(pending[: refused.index]))
                results.append(refused.error)
                pending = pending[refused.index + 1 :]
            except _MarksRefused:
                marked_each = True  # again, each message marked as it is applied: the one whose mark is refused is found
        return results

    def _apply_together(
        self, messages: list[tuple[int, Message, datetime]], *, marked_each: bool
    ) -> list[IngestResult]:
        """Apply every message in one transaction, or raise _Refused for the first that fails (all rolled back).

        The record_applied_messages rows go in together at the end, or each after its message
        (``marked_each``); _MarksRefused when the database refuses rows that went in together.
        """
        with store_errors(f"applying {len(messages)} message(s) to the record"):
            # TRANSACTION: for each message, every fact, history row, link, merge and conflict it makes
            # and the record_applied_messages row that makes a second apply a no-op.
            with self._engine.begin() as connection:
                lookup = Writer(
                    connection,
                    self._statements,
                    message_id=None,
                    cause="",
                    now=self._clock(),
                    message_time=_EPOCH,
                )
                keys = (
                    {"message_id": message_id}
                    for message_id in dict.fromkeys(message_id for message_id, _, _ in messages)
                )
                done = {
                    row["message_id"]: IngestResult(
                        row["message_id"],
                        row["event"],
                        row["patient_id"],
                        row["applied"],
                        row["detail"],
                        already_applied=True,
                    )
                    for row in lookup.rows(schema.applied_messages, *keys, order=())
                }
                results = []
                marks = []  # record_applied_messages rows, one statement for the batch
                for index, (message_id, message, received_at) in enumerate(messages):
                    result = done.get(message_id)
                    if result is None:
                        try:
                            with store_errors(f"applying message {message_id} to the record"):
                                result, done[message_id], mark = self._apply_one(
                                    connection, message_id, message, received_at
                                )
                                if marked_each:
                                    lookup.insert(schema.applied_messages, mark)
                                else:
                                    marks.append(mark)
                        except StoreError as error:
                            if error.transient:
                                raise  # the database, not this message: nothing of the batch can be applied now
                            raise _Refused(index, error) from error
                        except (
                            Exception
                        ) as error:  # RecordError, or a bug that this message's content triggers
                            raise _Refused(index, error) from error
                    results.append(result)
                try:
                    with store_errors(f"marking {len(marks)} message(s) applied to the record"):
                        lookup.insert_many(schema.applied_messages, marks)
                except StoreError as error:
                    if error.transient:
                        raise
                    raise _MarksRefused() from error
        return results

    def _apply_one(
        self, connection: sa.Connection, message_id: int, message: Message, received_at: datetime
    ) -> tuple[IngestResult, IngestResult, dict[str, Any]]:
        """Apply one message inside the caller's transaction: (its result, the result of applying it again, its record_applied_messages row to write)."""
        facts = read_message(message, received_at=received_at, local=self._local)
        writer = Writer(
            connection,
            self._statements,
            message_id=message_id,
            cause=facts.event,
            now=self._clock(),
            message_time=facts.message_time,
        )
        patient_id, applied, detail = _Application(writer, facts, self._rule, self._local).run()
        event = facts.event[:20]
        mark = {
            "message_id": message_id,
            "applied_at": writer.now,
            "event": event,
            "message_time": facts.message_time,
            "patient_id": patient_id,
            "applied": applied,
            "detail": detail,
        }
        return (
            IngestResult(message_id, facts.event, patient_id, applied, detail),
            IngestResult(message_id, event, patient_id, applied, detail, already_applied=True),
            mark,
        )

    def unmerge(self, merge_id: int, *, reason: str = "") -> int:
        """Undo a merge: the rows it moved go back to the prior patient, who becomes active again; returns how many moved.

        Facts that reached the survivor after the merge (even through the prior identifiers) stay
        with the survivor. Raises RecordError for an unknown or already undone merge.
        """
        with store_errors(f"undoing merge {merge_id}"):
            # TRANSACTION: the rows moved back, the prior patient reactivated, the merge marked undone, their history.
            with self._engine.begin() as connection:
                # An operator's undo confirms no data as of any time: it must not make later messages look stale.
                writer = Writer(
                    connection,
                    self._statements,
                    message_id=None,
                    cause=f"unmerge {merge_id}",
                    now=self._clock(),
                    message_time=_EPOCH,
                )
                return _unmerge(writer, merge_id, reason)


class _MarksRefused(Exception):
    """Raised out of a transaction (rolling it back) when the database refused the applied-message rows written together."""


class _Refused(Exception):
    """Raised out of a transaction (rolling it back) for the message at ``index`` that failed with ``error``."""

    def __init__(self, index: int, error: Exception):
        super().__init__(index, error)
        self.index = index
        self.error = error


def _unmerge(writer: Writer, merge_id: int, reason: str) -> int:
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


class _Application:
    """Applies one message's facts through one Writer; ``run`` returns (patient id, applied, detail)."""

    def __init__(self, writer: Writer, facts: MessageFacts, rule: IdentityRule | None, local: tzinfo):
        self.w = writer
        self.facts = facts
        self.rule = rule
        self.local = local
        self.notes: list[str] = []

    # -- dispatch ------------------------------------------------------------------------------

    def run(self) -> tuple[int | None, bool, str]:
        facts = self.facts
        handler = self._handler()
        if handler is None:
            return None, False, f"{facts.event} is not recorded"
        if not facts.patients:
            return None, False, f"{facts.event} has no PID: nothing for the record"
        patient_id = handler()
        return patient_id, True, "; ".join([f"patient {patient_id}", *self.notes])

    def _handler(self) -> Callable[[], int] | None:
        code, trigger = self.facts.code, self.facts.trigger
        if code == "ADT":
            if trigger in _MERGES:
                return self._merge
            if trigger in _ADMITS or trigger in ("A02", "A03", "A08", "A11", "A12", "A13", "A28", "A31"):
                return self._adt
        elif code == "SIU" and trigger in _SIU_EVENTS:
            return self._appointment
        elif code == "ORU" and trigger in ("R01", ""):
            return self._results
        elif code == "DFT" and trigger in ("P03", "P11"):
            return self._financial
        return None

    # -- patients and identity -----------------------------------------------------------------

    def _patient(self, group: PatientGroup) -> int:
        """Resolve (or create) the PID's patient, link its new identifiers, apply its demographics if not stale."""
        pid = group.pid
        identifiers = pid_identifiers(pid, self.facts)
        # The PID's demographics are read only when used: a message older than the record (a resend) leaves them unread.
        read = None
        match = find_known(self.w, identifiers)
        if match is None:
            read = values, lists = _pid_values(pid, self.local)
            demographics = _demographics(values, lists)
            if not identifiers and not any(demographics.values()):
                raise RecordError("the PID names no identifier (PID-2/3/4) and no demographics")
            match = find_by_rule(self.w.connection, identifiers, demographics, self.rule)
        if match.patient_id is None:
            values, lists = read
            sent = self._sent_lists(group, lists)
            digests = {table: list_digest(rows) for table, rows in sent.items()} or None
            patient_id = self.w.insert(
                schema.patients,
                {**values, "created_at": self.w.now, "updated_at": self.w.now, "list_digests": digests},
            )
            for table, rows in sent.items():
                self.w.replace_list(schema.TABLES[table], patient_id, rows, new_patient=True)
            reason = (
                "registered by this message"
                if not match.conflicts
                else "registered by this message (identity conflict flagged)"
            )
        else:
            patient_id = match.patient_id
            reason = match.reason
            patient = match.patient or self.w.select_one(schema.patients, {"id": patient_id})
            if self.w.is_stale(patient):
                self.notes.append("demographics kept: the message is older than the record")
            else:
                values, lists = read or _pid_values(pid, self.local)
                sent = self._sent_lists(group, lists)
                known = patient["list_digests"] or {}
                digests = {**known, **{table: list_digest(rows) for table, rows in sent.items()}} or None
                self.w.update(schema.patients, patient, values, unrecorded={"list_digests": digests})
                for table, rows in sent.items():
                    if (
                        known.get(table) != digests[table]
                    ):  # a list stored as sent already is not read to find that out
                        self.w.replace_list(schema.TABLES[table], patient_id, rows)
        for identifier in identifiers:
            if (identifier.authority, identifier.value) not in match.known:
                self._link(identifier, patient_id, reason, alias=False)
        for conflict in match.conflicts:
            self._flag(
                conflict.kind, patient_id, conflict.other_patient_id, conflict.detail, conflict.identifier
            )
        return patient_id

    def _link(self, identifier: Identifier, patient_id: int, reason: str, *, alias: bool) -> int:
        return self.w.insert(
            schema.identifiers,
            {
                "patient_id": patient_id,
                "authority": identifier.authority,
                "value": identifier.value,
                "type_code": identifier.type_code,
                "source_system": self.facts.source_system,
                "alias": alias,
                "link_reason": f"{reason} (message {self.w.message_id})",
                "linked_at": self.w.now,
            },
        )

    def _flag(
        self,
        kind: str,
        patient_id: int | None,
        other: int | None,
        detail: str,
        identifier: Identifier | None = None,
    ) -> None:
        self.w.insert(
            schema.conflicts,
            {
                "kind": kind,
                "patient_id": patient_id,
                "other_patient_id": other,
                "detail": detail,
                "created_at": self.w.now,
                "authority": identifier.authority if identifier else None,
                "value": identifier.value if identifier else None,
            },
        )
        self.notes.append(f"identity conflict flagged ({kind})")

    def _sent_lists(self, group: PatientGroup, lists: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The patient's lists the message sends (names, addresses, telecoms from the PID; contacts from NK1), as stored."""
        sent = {
            table: self.w.fit_list(schema.TABLES[table], rows)
            for table, rows in lists.items()
            if rows is not KEEP
        }
        if group.contacts:
            sent[schema.contacts.name] = self.w.fit_list(
                schema.contacts, [_contact_values(nk1) for nk1 in group.contacts]
            )
        return sent

    # -- ADT -------------------------------------------------------------------------------------

    def _adt(self) -> int:
        group = self.facts.patients[0]
        trigger = self.facts.trigger
        patient_id = self._patient(group)
        visit_id = None
        if trigger not in ("A28", "A31") and group.pv1 is not None:
            visit_id = self._adt_visit(patient_id, group, trigger)
        if trigger not in ("A11", "A12", "A13"):
            self._clinical(group, patient_id, visit_id)
        return patient_id

    def _adt_visit(self, patient_id: int, group: PatientGroup, trigger: str) -> int | None:
        values = _visit_values(group.pv1, group.pv2, self.local)
        creating = trigger in _ADMITS or trigger in ("A02", "A03")
        visit = self._find_visit(patient_id, values["visit_number"], latest=trigger not in _ADMITS)
        if trigger in ("A11", "A12", "A13") and visit is None:
            self.notes.append(f"no visit to cancel for {trigger}")
            return None
        if visit is not None and self.w.is_stale(visit):
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
            values.setdefault("status", _status_from(values))
            return self.w.insert(schema.visits, {**values, "patient_id": patient_id})
        self.w.update(schema.visits, visit, values)
        return visit["id"]

    def _find_visit(self, patient_id: int, number: Any, *, latest: bool) -> sa.RowMapping | None:
        v = schema.visits
        if isinstance(number, str):
            return self.w.select_one(v, {"patient_id": patient_id, "visit_number": number})
        if not latest:
            return None
        found = self.w.rows(
            v, {"patient_id": patient_id, "status": Differs("cancelled")}, descending=True, limit=1
        )
        return found[0] if found else None

    def _visit_of(self, patient_id: int, group: PatientGroup) -> int | None:
        """The visit a non-ADT message's PV1 names by number (created when unknown); None without one."""
        if group.pv1 is None:
            return None
        number = _visit_number(group.pv1)
        if not isinstance(number, str):
            return None
        visit = self._find_visit(patient_id, number, latest=False)
        if visit is not None:
            return visit["id"]
        values = _visit_values(group.pv1, group.pv2, self.local)
        return self.w.insert(
            schema.visits, {**values, "patient_id": patient_id, "status": _status_from(values)}
        )

    # -- clinical lists (AL1, DG1, PR1, IN1/IN2) -------------------------------------------------

    def _clinical(self, group: PatientGroup, patient_id: int, visit_id: int | None) -> None:
        # The key first: the rest of a segment is read only for a row it writes.
        for al1 in group.allergies:
            code = al1.coded(3)
            self._upsert(
                schema.allergies,
                _coded_key(code, patient_id=patient_id),
                functools.partial(_allergy_values, al1, code),
            )
        for dg1 in group.diagnoses:
            code = _described(dg1)
            self._upsert(
                schema.diagnoses,
                _coded_key(code, patient_id=patient_id, visit_id=visit_id),
                functools.partial(_diagnosis_values, dg1, code, self.local),
            )
        for pr1 in group.procedures:
            values = {**_described(pr1), **pr1.columns(5, {"performed_at": ("5.1", self._time)})}
            key = _coded_key(values, patient_id=patient_id, visit_id=visit_id)
            key["performed_at"] = values["performed_at"] or None
            self._upsert(schema.procedures, key, lambda values=values: values)
        for in1, in2 in group.insurances:
            values = _coverage_values(in1, in2)
            key = {
                "patient_id": patient_id,
                **{name: values[name] or None for name in ("company_id", "plan_id", "policy_number")},
            }
            if not any(key[name] for name in ("company_id", "plan_id", "policy_number")):
                key["company_name"] = values["company_name"] or None
            self._upsert(schema.coverages, key, lambda values=values: values)

    def _upsert(self, table: sa.Table, key: dict[str, Any], read: Callable[[], dict[str, Any]]) -> int:
        """Insert the row with this key, or update it unless the message is older than its data; returns its id. ``read`` gives the values."""
        row = self.w.select_one(table, key)
        if row is None:
            return self.w.insert(table, {**read(), **key})
        if self.w.is_stale(row):
            self.notes.append(
                f"{table.name.removeprefix('record_')} {row['id']} kept: the message is older than the record"
            )
        else:
            self.w.update(table, row, read())
        return row["id"]

    def _time(self, text: str) -> datetime | None:
        return parse_timestamp(text, self.local)

    # -- merges ----------------------------------------------------------------------------------

    def _merge(self) -> int:
        groups = [group for group in self.facts.patients if group.mrg is not None]
        if not groups:
            raise RecordError(f"{self.facts.event} has no MRG segment: nothing says which patient to merge")
        survivor = None
        for group in groups:
            survivor = self._patient(group)
            self._merge_prior(survivor, prior_identifiers(group.mrg, self.facts))
        return survivor

    def _merge_prior(self, survivor: int, priors: list[Identifier]) -> None:
        if not priors:
            raise RecordError("MRG-1 names no prior identifier")
        i = schema.identifiers
        keys = [(p.authority, p.value) for p in priors]
        rows = (
            self.w.connection.execute(sa.select(i).where(sa.tuple_(i.c.authority, i.c.value).in_(keys)))
            .mappings()
            .all()
        )
        by_key = {(row["authority"], row["value"]): row for row in rows}
        owners: list[int] = []
        for key in keys:
            if key in by_key:
                owner = survivor_of(self.w, by_key[key]["patient_id"])["id"]
                if owner not in owners:
                    owners.append(owner)
        priors_json = [list(key) for key in keys]
        moved: dict[str, list[int]] = {}
        prior_patient = next((owner for owner in owners if owner != survivor), None)
        for other in owners:
            if other not in (survivor, prior_patient):
                self._flag(
                    "merge_ambiguous",
                    survivor,
                    other,
                    f"MRG-1 names identifiers of patients {prior_patient} and {other}; only {prior_patient} was merged",
                )
        merge_id = self.w.insert(
            schema.merges,
            {
                "survivor_id": survivor,
                "prior_id": prior_patient,
                "prior_identifiers": priors_json,
                "event": self.facts.trigger,
                "merged_at": self.w.now,
                "moved": {},
            },
        )
        if prior_patient is not None:
            moved = self._move(prior_patient, survivor, merge_id)
        created = []
        for prior in priors:
            row = by_key.get((prior.authority, prior.value))
            if row is None:
                created.append(self._link(prior, survivor, f"merge {merge_id}: prior identifier", alias=True))
            elif (
                survivor_of(self.w, row["patient_id"])["id"] == survivor
                and not row["alias"]
                and row["id"] not in moved.get(i.name, [])
            ):
                self.w.update(i, row, {"alias": True}, cause=f"merge {merge_id}")
        moved["created_identifiers"] = created
        self.w.connection.execute(
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
        """Move every fact of ``prior`` to ``survivor`` (identifiers as aliases); returns the moved ids per table."""
        moved = {}
        for table in schema.FACT_TABLES:
            ids = list(
                self.w.connection.execute(sa.select(table.c.id).where(table.c.patient_id == prior)).scalars()
            )
            if not ids:
                continue
            values: dict[str, Any] = {"patient_id": survivor}
            if table is schema.identifiers:
                values["alias"] = True
            self.w.connection.execute(table.update().where(table.c.id.in_(ids)).values(**values))
            moved[table.name] = ids
        patient = self.w.select_one(schema.patients, {"id": prior})
        self.w.update(schema.patients, patient, {"merged_into_id": survivor}, cause=f"merge {merge_id}")
        c = schema.conflicts
        between = sa.or_(
            sa.and_(c.c.patient_id == prior, c.c.other_patient_id == survivor),
            sa.and_(c.c.patient_id == survivor, c.c.other_patient_id == prior),
        )
        self.w.connection.execute(
            c.update()
            .where(between, c.c.resolved_at.is_(None))
            .values(resolved_at=self.w.now, resolution=f"merged by merge {merge_id}")
        )
        return moved

    # -- SIU -------------------------------------------------------------------------------------

    def _appointment(self) -> int:
        facts = self.facts
        group = facts.patients[0]
        patient_id = self._patient(group)
        visit_id = self._visit_of(patient_id, group)
        sch = facts.sch
        placer = sch.part("1.1") if sch is not None else None
        filler = sch.part("2.1") if sch is not None else None
        if placer is None and filler is None:
            self.notes.append("no appointment recorded: no SCH-1/SCH-2 appointment identifier")
            return patient_id
        a = schema.appointments
        appointment = None
        if filler is not None:
            appointment = self.w.select_one(a, {"filler_id": filler})
        if appointment is None and placer is not None:
            appointment = self.w.select_one(a, {"placer_id": placer})
        if appointment is not None and self.w.is_stale(appointment):
            self.notes.append(f"appointment {appointment['id']} kept: the message is older than the record")
            return patient_id
        values = self._appointment_values(sch, facts.tq1, facts.resources)
        values.update(
            patient_id=patient_id, placer_id=placer or KEEP, filler_id=filler or KEEP, event=facts.trigger
        )
        if visit_id is not None:
            values["visit_id"] = visit_id
        trigger = facts.trigger
        if trigger in _SIU_STATUS:
            values["status"] = _SIU_STATUS[trigger]
        elif trigger in ("S12", "S13") and values["status"] is KEEP:
            values["status"] = "Booked"
        if appointment is None:
            if values["status"] in (KEEP, None):
                values["status"] = "Booked"
            appointment_id = self.w.insert(a, values)
        else:
            appointment_id = appointment["id"]
            self.w.update(a, appointment, values)
        if facts.resources:
            self._replace_resources(appointment_id, facts.resources)
        self._clinical(group, patient_id, visit_id)
        return patient_id

    def _appointment_values(
        self, sch: SegmentReader, tq1: SegmentReader | None, resources: list[SegmentReader]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {**sch.coded(7, "reason_"), **sch.coded(8, "type_")}
        if values["reason_code"] is KEEP and sch.part("6.1"):
            values.update(sch.coded(6, "reason_"))
        values.update(sch.columns(25, {"status": "25.1"}))
        start = end = KEEP
        if tq1 is not None:
            start, end = (
                tq1.columns(7, {"v": ("7.1", self._time)})["v"],
                tq1.columns(8, {"v": ("8.1", self._time)})["v"],
            )
        if start is KEEP:
            start = sch.columns(11, {"v": ("11.4", self._time)})["v"]
        if end is KEEP:
            end = sch.columns(11, {"v": ("11.5", self._time)})["v"]
        duration = _minutes(sch.part("9"), sch.part("10.1"))
        for resource in resources:
            _, start_field, duration_field, units_field, _ = _RESOURCE_FIELDS[resource.name]
            if start is KEEP or start is None:
                start = self._time(resource.get(f"{start_field}.1")) or start
            if duration is None:
                duration = _minutes(resource.part(f"{duration_field}"), resource.part(f"{units_field}.1"))
        if isinstance(start, datetime) and end in (KEEP, None) and duration is not None:
            end = start + timedelta(minutes=duration)
        if isinstance(start, datetime) and isinstance(end, datetime) and duration is None:
            duration = int((end - start).total_seconds() // 60)
        values.update(start_at=start, end_at=end, duration_minutes=KEEP if duration is None else duration)
        return values

    def _replace_resources(self, appointment_id: int, resources: list[SegmentReader]) -> None:
        r = schema.appointment_resources
        compared = ("kind", "code", "text", "role", "start_at", "duration_minutes")
        old = [
            {name: row[name] for name in compared}
            for row in self.w.rows(r, {"appointment_id": appointment_id})
        ]
        new = []
        for resource in resources:
            code_field, start_field, duration_field, units_field, role_field = _RESOURCE_FIELDS[resource.name]
            if resource.name == "AIL":
                code = {
                    "code": resource.part(f"{code_field}.1"),
                    "text": _location_display(resource, code_field),
                    "system": None,
                }
            elif resource.name == "AIP":
                person_id, person_name = resource.person(code_field)
                code = {"code": person_id, "text": person_name, "system": None}
            else:
                code = {
                    name: (None if value is KEEP else value)
                    for name, value in resource.coded(code_field).items()
                }
            role = None
            if role_field is not None:
                role = resource.part(f"{role_field}.2") or resource.part(f"{role_field}.1")
            new.append(
                {
                    "kind": _RESOURCE_KINDS[resource.name],
                    **code,
                    "role": role,
                    "start_at": self._time(resource.get(f"{start_field}.1")),
                    "duration_minutes": _minutes(
                        resource.part(f"{duration_field}"), resource.part(f"{units_field}.1")
                    ),
                }
            )
        comparable = [{name: row[name] for name in compared} for row in new]
        if old == comparable:
            return
        self.w.history(schema.appointments.name, appointment_id, "resources", old, comparable)
        self.w.delete(r, {"appointment_id": appointment_id})
        self.w.insert_many(r, ({**row, "appointment_id": appointment_id} for row in new))

    # -- ORU -------------------------------------------------------------------------------------

    def _results(self) -> int:
        first = None
        for group in self.facts.patients:
            patient_id = self._patient(group)
            first = first if first is not None else patient_id
            visit_id = self._visit_of(patient_id, group)
            for order in group.orders:
                self._order(patient_id, visit_id, order)
        return first

    def _order(self, patient_id: int, visit_id: int | None, order: OrderGroup) -> None:
        obr, orc = order.obr, order.orc
        main = obr or orc
        filler = (obr and obr.part("3.1")) or (orc and orc.part("3.1"))
        placer = (obr and obr.part("2.1")) or (orc and orc.part("2.1"))
        values: dict[str, Any] = {
            "placer_number": placer or KEEP,
            "filler_number": filler or KEEP,
            "notes": "\n".join(order.notes) if order.notes else KEEP,
        }
        if obr is not None:
            values.update(obr.coded(4))
            values.update(obr.columns(25, {"status": "25.1"}))
            values.update(obr.columns(7, {"observed_at": ("7.1", self._time)}))
            values.update(obr.columns(22, {"reported_at": ("22.1", self._time)}))
        if orc is not None:
            values.update(orc.columns(1, {"order_control": "1.1"}))
        provider_field = 16 if obr is not None else 12
        if main.sent(provider_field):
            values["ordering_provider_id"], values["ordering_provider_name"] = main.person(provider_field)
        if visit_id is not None:
            values["visit_id"] = visit_id
        o = schema.orders
        if filler:
            key = {"patient_id": patient_id, "filler_number": filler}
        elif placer:
            key = {"patient_id": patient_id, "placer_number": placer}
        else:
            key = {
                "patient_id": patient_id,
                "filler_number": None,
                "placer_number": None,
                "code": values.get("code") or None,
                "observed_at": values.get("observed_at") or None,
            }
        row = self.w.select_one(o, key)
        if row is None:
            order_id = self.w.insert(o, {**values, "patient_id": patient_id})
        else:
            order_id = row["id"]
            if not self._keeps(row, values.get("status"), "order"):
                self.w.update(o, row, values)
        # An order created by this group has no observations but the group's; an existing one's are read in one select.
        stored = (
            self.w.rows(schema.observations, {"order_id": order_id})
            if row is not None and order.observations
            else []
        )
        group = _StoredObservations(stored)
        # Each observation of the group has its own key, so none can be one that the group inserts: they go in together.
        new = [
            self._observation(
                patient_id, order_id, observation.obx, observation.notes, group, values.get("observed_at")
            )
            for observation in order.observations
        ]
        self.w.insert_many(schema.observations, (values for values in new if values is not None))

    def _keeps(self, row: sa.RowMapping, incoming: Any, what: str) -> bool:
        """Whether ``row`` stays as it is: the message is older, or a preliminary result would replace a final one."""
        if self.w.is_stale(row):
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
        code, text, _ = _observation_code(obx).values()
        sub_id = _sub_id(obx)
        seen = group.seen
        key = (code or text, sub_id)
        occurrence = seen[key] = seen.get(key, 0) + 1
        ob = schema.observations
        row = None
        if group.stored:
            coded = {"code": code} if code else {"code": None, "text": text}
            row = group.find(
                self.w, {"order_id": order_id, "sub_id": sub_id, "occurrence": occurrence, **coded}
            )
        status = KEEP
        if row is not None:
            status = _result_status(obx) or KEEP
            if self._keeps(row, status, "observation"):
                return None
        values = _observation_values(obx, self.local)
        values["notes"] = "\n".join(notes) if notes else None
        if values["observed_at"] in (KEEP, None) and isinstance(order_time, datetime):
            values["observed_at"] = order_time
        if row is None:
            return {**values, "order_id": order_id, "patient_id": patient_id, "occurrence": occurrence}
        values["status"] = status
        if status in _CANCELLING:
            self.w.update(ob, row, {"status": status})
        else:
            self.w.update(ob, row, values)
        group.updated.add(row["id"])
        return None

    # -- DFT -------------------------------------------------------------------------------------

    def _financial(self) -> int:
        group = self.facts.patients[0]
        patient_id = self._patient(group)
        visit_id = self._visit_of(patient_id, group)
        self._clinical(group, patient_id, visit_id)
        t = schema.transactions
        for ft1 in group.transactions:
            read = functools.partial(
                _transaction_values, ft1, self.local, patient_id=patient_id, visit_id=visit_id
            )
            transaction_id = _transaction_id(ft1)
            if isinstance(transaction_id, str):
                self._upsert(t, {"patient_id": patient_id, "transaction_id": transaction_id}, read)
            else:
                self.w.insert(t, read())
        return patient_id


class _StoredObservations:
    """The observations an order had before this message's OBX group (read in one select), and what the group did with them."""

    def __init__(self, stored: list[dict[str, Any]]):
        self.stored = stored
        self.seen: dict[
            tuple[Any, str], int
        ] = {}  # (code or text, sub id) -> OBX with it so far: the next one's occurrence
        self.updated: set[int] = set()

    def find(self, writer: Writer, key: dict[str, Any]) -> dict[str, Any] | None:
        """The stored observation ``key`` selects (lowest id); one the group updated already is read again, as it now is."""
        row = writer.first(schema.observations, self.stored, key)
        if row is not None and row["id"] in self.updated:
            return writer.select_one(schema.observations, key)
        return row


# -- reading segments into column values ---------------------------------------------------------


def _allergy_values(al1: SegmentReader, code: dict[str, Any]) -> dict[str, Any]:
    return {
        **code,
        **al1.columns(2, {"allergy_type": "2.1"}),
        **al1.columns(4, {"severity": "4.1"}),
        **al1.columns(5, {"reaction": "5"}),
        **al1.columns(6, {"identified_date": ("6.1", parse_partial_date)}),
    }


def _described(segment: SegmentReader) -> dict[str, Any]:
    """Field 3 of a DG1 or PR1 (coded), its text taken from field 4 (the description) when field 3 has none."""
    code = segment.coded(3)
    if code["text"] in (None, KEEP) and segment.part("4"):
        code["text"] = segment.part("4")
    return code


def _diagnosis_values(dg1: SegmentReader, code: dict[str, Any], local: tzinfo) -> dict[str, Any]:
    return {
        **code,
        **dg1.columns(6, {"diagnosis_type": "6.1"}),
        **dg1.columns(5, {"diagnosed_at": ("5.1", lambda text: parse_timestamp(text, local))}),
    }


def _coded_key(values: dict[str, Any], **key: Any) -> dict[str, Any]:
    """A fact's key: its code, or its text when it has no code."""
    code = values.get("code")
    if code not in (KEEP, None):
        return {**key, "code": code}
    text = values.get("text")
    return {**key, "code": None, "text": None if text is KEEP else text}


def _demographics(values: dict[str, Any], lists: dict[str, Any]) -> dict[str, str]:
    """What the identity rule compares, normalised: the first name's family and given names, birth date, sex."""
    names = lists["record_names"]
    first_name = names[0] if names else {}
    return {
        "family": normalise(first_name.get("family")),
        "given": normalise(first_name.get("given")),
        "birth_date": values["birth_date"] or "",
        "sex": values["sex"] or "",
    }


def _pid_values(pid: SegmentReader, local: tzinfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The patient's columns and lists (names, addresses, telecoms: KEEP when the field is absent)."""
    values = {
        **pid.columns(7, {"birth_date": ("7.1", parse_partial_date)}),
        **pid.columns(8, {"sex": ("8.1", str.upper)}),
        **pid.columns(15, {"language": "15.1"}),
        **pid.columns(16, {"marital_status": "16.1"}),
        **pid.columns(29, {"deceased_at": ("29.1", lambda text: parse_timestamp(text, local))}),
        **pid.columns(30, {"deceased": ("30.1", lambda text: {"Y": True, "N": False}.get(text.upper()))}),
    }
    if values["language"] is None and pid.sent(15):
        values["language"] = pid.part("15.4")
    lists: dict[str, Any] = {
        "record_names": _repeated(pid, 5, _name),
        "record_addresses": _repeated(pid, 11, _address),
    }
    home, work = _repeated(pid, 13, _telecom), _repeated(pid, 14, _telecom)
    if home is KEEP and work is KEEP:
        lists["record_telecoms"] = KEEP
    else:
        lists["record_telecoms"] = [{**t, "use": "home"} for t in home or []] + [
            {**t, "use": "work"} for t in work or []
        ]
    return values, lists


def _repeated(reader: SegmentReader, n: int, read: Callable[[SegmentReader, str], dict | None]) -> Any:
    state = reader.sent(n)
    if state is False:
        return KEEP
    if state is None:
        return []
    rows = [read(reader, f"{n}[{repetition}]") for repetition in range(1, reader.repetitions(n) + 1)]
    return [row for row in rows if row]


def _name(reader: SegmentReader, where: str) -> dict | None:
    row = {
        "family": reader.part(f"{where}.1.1"),
        "given": reader.part(f"{where}.2"),
        "middle": reader.part(f"{where}.3"),
        "suffix": reader.part(f"{where}.4"),
        "prefix": reader.part(f"{where}.5"),
        "name_type": reader.part(f"{where}.7"),
    }
    if not (row["family"] or row["given"]):
        return None
    return {
        **row,
        "family_key": normalise(row["family"]) or None,
        "given_key": normalise(row["given"]) or None,
    }


def _address(reader: SegmentReader, where: str) -> dict | None:
    row = {
        "line1": reader.part(f"{where}.1.1"),
        "line2": reader.part(f"{where}.2"),
        "city": reader.part(f"{where}.3"),
        "state": reader.part(f"{where}.4"),
        "postal_code": reader.part(f"{where}.5"),
        "country": reader.part(f"{where}.6"),
        "address_type": reader.part(f"{where}.7"),
    }
    return row if any(row.values()) else None


def _phone(reader: SegmentReader, where: str) -> str | None:
    email = reader.part(f"{where}.4")
    if email and "@" in email:
        return email
    local = reader.part(f"{where}.7")
    if local:
        country, area, extension = (
            reader.part(f"{where}.5"),
            reader.part(f"{where}.6"),
            reader.part(f"{where}.8"),
        )
        return "".join(
            [
                f"+{country} " if country else "",
                f"({area}) " if area else "",
                local,
                f" x{extension}" if extension else "",
            ]
        )
    return reader.part(f"{where}.1") or email


def _telecom(reader: SegmentReader, where: str) -> dict | None:
    value = _phone(reader, where)
    if value is None:
        return None
    return {"value": value, "use_code": reader.part(f"{where}.2"), "equipment": reader.part(f"{where}.3")}


def _contact_values(nk1: SegmentReader) -> dict[str, Any]:
    relationship = {
        name: (None if value is KEEP else value) for name, value in nk1.coded(3, "relationship_").items()
    }
    return {
        "family": nk1.part("2.1.1"),
        "given": nk1.part("2.2"),
        **relationship,
        "phone": _phone(nk1, "5[1]") if nk1.sent(5) else None,
    }


def _location_display(reader: SegmentReader, n: int) -> str | None:
    parts = [reader.part(f"{n}.1"), reader.part(f"{n}.2"), reader.part(f"{n}.3"), reader.part(f"{n}.4.1")]
    return " ".join(part for part in parts if part) or None


def _location_text(visit: sa.RowMapping) -> str | None:
    parts = [visit["point_of_care"], visit["room"], visit["bed"], visit["facility"]]
    return " ".join(part for part in parts if part) or None


def _visit_number(pv1: SegmentReader) -> Any:
    """PV1-19.1, the visit number (KEEP when absent, None when null)."""
    return pv1.columns(19, {"visit_number": "19.1"})["visit_number"]


def _visit_values(pv1: SegmentReader, pv2: SegmentReader | None, local: tzinfo) -> dict[str, Any]:
    def time(text: str) -> datetime | None:
        return parse_timestamp(text, local)

    values: dict[str, Any] = {
        "visit_number": _visit_number(pv1),
        **pv1.columns(2, {"patient_class": "2.1"}),
        **pv1.columns(3, {"point_of_care": "3.1", "room": "3.2", "bed": "3.3", "facility": "3.4.1"}),
        **pv1.columns(10, {"hospital_service": "10.1"}),
        **pv1.columns(36, {"discharge_disposition": "36.1"}),
        **pv1.columns(44, {"admitted_at": ("44.1", time)}),
        **pv1.columns(45, {"discharged_at": ("45.1", time)}),
        "prior_location": KEEP
        if pv1.sent(6) is False
        else (_location_display(pv1, 6) if pv1.sent(6) else None),
    }
    for field_number, prefix in ((7, "attending"), (8, "referring")):
        state = pv1.sent(field_number)
        person = pv1.person(field_number) if state else (None, None)
        values[f"{prefix}_id"], values[f"{prefix}_name"] = (KEEP, KEEP) if state is False else person
    values["admit_reason"] = KEEP
    if pv2 is not None and pv2.sent(3) is not False:
        values["admit_reason"] = (pv2.part("3.2") or pv2.part("3.1")) if pv2.sent(3) else None
    return values


def _status_from(values: dict[str, Any]) -> str:
    """The status of a visit first seen in a message that does not say (A08, ORU, SIU, DFT)."""
    if isinstance(values.get("discharged_at"), datetime):
        return "finished"
    if isinstance(values.get("admitted_at"), datetime):
        return "in-progress"
    return "unknown"


def _coverage_values(in1: SegmentReader, in2: SegmentReader | None) -> dict[str, Any]:
    insured = " ".join(part for part in (in1.part("16.2"), in1.part("16.1.1")) if part) or None
    values = {
        **in1.columns(2, {"plan_id": "2.1", "plan_name": "2.2"}),
        **in1.columns(3, {"company_id": "3.1"}),
        **in1.columns(4, {"company_name": "4.1"}),
        **in1.columns(8, {"group_number": "8"}),
        **in1.columns(9, {"group_name": "9.1"}),
        **in1.columns(12, {"effective_date": ("12", parse_partial_date)}),
        **in1.columns(13, {"expiration_date": ("13", parse_partial_date)}),
        **in1.columns(17, {"relationship": "17.1"}),
        **in1.columns(36, {"policy_number": "36"}),
        "insured_name": KEEP if in1.sent(16) is False else insured,
        "member_number": in1.part("49.1") or in1.part("36") or KEEP,
    }
    if in2 is not None:
        values.update(in2.columns(6, {"medicare_number": "6"}))
        values.update(in2.columns(8, {"medicaid_number": "8"}))
    return values


def _minutes(amount: str | None, units: str | None) -> int | None:
    number = parse_decimal(amount or "")
    if number is None:
        return None
    unit = (units or "MIN").upper()
    if unit.startswith("S"):
        number /= 60
    elif unit.startswith("H"):
        number *= 60
    elif unit.startswith("D"):
        number *= 1440
    return int(number)


def _float(text: str | None) -> float | None:
    number = parse_decimal(text or "")
    return float(number) if number is not None else None


def _observation_code(obx: SegmentReader) -> dict[str, str | None]:
    """OBX-3 as code, text and system (None when absent)."""
    return {name: (None if value is KEEP else value) for name, value in obx.coded(3).items()}


def _sub_id(obx: SegmentReader) -> str:
    """OBX-4, the observation sub-id ("" when absent)."""
    return (obx.part("4") or "")[:20]


def _result_status(obx: SegmentReader) -> str:
    """OBX-11, the result status ("" when absent)."""
    return (obx.part("11") or "")[:2].upper()


def _observation_values(obx: SegmentReader, local: tzinfo) -> dict[str, Any]:
    value_type = (obx.part("2.1") or "").upper()
    values: dict[str, Any] = {
        **_observation_code(obx),
        "sub_id": _sub_id(obx),
        "value_type": value_type or None,
        "value": None,
        "numeric_value": None,
        "comparator": None,
        "separator": None,
        "numeric_high": None,
        "coded_code": None,
        "coded_text": None,
        "coded_system": None,
        "media_type": None,
        "encoding": None,
        "units": obx.part("6.1") or obx.part("6.2"),
        "reference_range": obx.part("7"),
        "abnormal_flags": "~".join(
            flag for r in range(1, obx.repetitions(8) + 1) if (flag := obx.part(f"8[{r}].1"))
        )
        or None,
        "status": _result_status(obx),
        "observed_at": parse_timestamp(obx.get("14.1"), local),
        "performing_lab": obx.part("23.1") or obx.part("15.2") or obx.part("15.1"),
    }
    if obx.sent(5) is not True:
        return values
    if value_type == "NM":
        values["value"] = obx.part("5")
        values["numeric_value"] = _float(values["value"])
    elif value_type == "SN":
        comparator, first, separator, second = (obx.part(f"5.{c}") for c in (1, 2, 3, 4))
        values.update(
            comparator=comparator,
            numeric_value=_float(first),
            separator=separator,
            numeric_high=_float(second),
        )
        values["value"] = "".join(part for part in (comparator, first, separator, second) if part) or None
    elif value_type in ("CE", "CWE", "CNE", "CF"):
        values.update(coded_code=obx.part("5.1"), coded_text=obx.part("5.2"), coded_system=obx.part("5.3"))
        values["value"] = values["coded_text"] or values["coded_code"]
    elif value_type == "ED":
        subtype = obx.part("5.3")
        media = "/".join(part for part in (obx.part("5.2"), subtype) if part)
        values.update(
            media_type=media.lower() or None, encoding=obx.part("5.4"), value=obx.get("5.5") or None
        )
    elif value_type == "DT":
        values["value"] = parse_partial_date(obx.get("5.1")) or obx.part("5")
    elif value_type in ("TS", "DTM"):
        moment = parse_timestamp(obx.get("5.1"), local)
        values["value"] = moment.isoformat() if moment else obx.part("5")
    else:
        lines = [obx.get(f"5[{r}]") for r in range(1, obx.repetitions(5) + 1)]
        values["value"] = "\n".join(lines) or None
    return values


def _transaction_id(ft1: SegmentReader) -> Any:
    """FT1-2.1, the transaction id (KEEP when absent, None when null)."""
    return ft1.columns(2, {"transaction_id": "2.1"})["transaction_id"]


def _transaction_values(ft1: SegmentReader, local: tzinfo, **more: Any) -> dict[str, Any]:
    def time(text: str) -> datetime | None:
        return parse_timestamp(text, local)

    diagnoses = []
    for r in range(1, ft1.repetitions(19) + 1):
        code = {
            name: (None if value is KEEP else value) for name, value in ft1.coded(19, repetition=r).items()
        }
        if code["code"] or code["text"]:
            diagnoses.append(code)
    performed = ft1.person(20) if ft1.sent(20) else (None, None)
    ordered = ft1.person(21) if ft1.sent(21) else (None, None)
    return {
        "transaction_id": _transaction_id(ft1),
        **ft1.columns(3, {"batch_id": "3"}),
        "transaction_type": (ft1.part("6.1") or "")[:10],
        **ft1.columns(4, {"transaction_at": ("4.1", time)}),
        **ft1.columns(5, {"posted_at": ("5.1", time)}),
        **{name: (None if value is KEEP else value) for name, value in ft1.coded(7).items()},
        "quantity": parse_decimal(ft1.get("10")),
        "amount": parse_decimal(ft1.get("11.1.1")),
        "unit_amount": parse_decimal(ft1.get("12.1.1")),
        "currency": ft1.part("11.1.2") or ft1.part("12.1.2"),
        "department": ft1.part("13.2") or ft1.part("13.1"),
        **{name: (None if value is KEEP else value) for name, value in ft1.coded(25, "procedure_").items()},
        "diagnoses": diagnoses or None,
        "performed_by": performed[1] or performed[0],
        "ordered_by": ordered[1] or ordered[0],
        **more,
    }
