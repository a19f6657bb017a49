"""Merges and links of two patients, and their undoing: every one a record_merges row, reversible.

A merge moves every fact of the prior patient to the survivor (its identifiers as aliases) and
lists what it moved, so that ``unmerge`` moves exactly those back. Its ``kind`` says who decided
it (``merge``: an ADT merge event; ``link``: A24 or an operator's link; ``cross_reference``: a
PID listing identifiers of both; ``rule``: the identity rule; ``operator``: an operator's merge).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.errors import RecordError
from engine.record import schema
from engine.record.identity import digits
from engine.record.writer import Writer

__all__ = ["LINK_KINDS", "contradiction", "merge_patients", "unmerge"]

#: The kinds of merge that ``unlink`` undoes: links, not merges asked for by a merge event.
LINK_KINDS = frozenset({"link", "cross_reference", "rule"})


def contradiction(one: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    """Which of birth date, sex and SSN two patients' rows (or PID values) both know and disagree on, or None.

    SSNs are compared by their digits (``123-45-6789`` is ``123456789``).
    """
    for name in ("birth_date", "sex"):
        a, b = one.get(name), other.get(name)
        if isinstance(a, str) and isinstance(b, str) and a and b and a != b:
            return name.replace("_", " ")
    a, b = digits(one.get("ssn")), digits(other.get("ssn"))
    if a and b and a != b:
        return "SSN"
    return None


def merge_patients(
    writer: Writer,
    survivor: int,
    prior: int | None,
    *,
    event: str,
    kind: str,
    reason: str,
    source_system: str | None,
    prior_identifiers: list[list[str]] | None = None,
) -> int:
    """Record a merge of ``prior`` (None: no known patient) into ``survivor`` and move its facts; its id."""
    merge_id = writer.insert(
        schema.merges,
        {
            "survivor_id": survivor,
            "prior_id": prior,
            "prior_identifiers": prior_identifiers or [],
            "event": event[:10],
            "merged_at": writer.now,
            "moved": {},
            "kind": kind,
            "reason": reason,
            "source_system": source_system,
        },
    )
    if prior is not None:
        set_moved(writer, merge_id, _move(writer, prior, survivor, merge_id))
    return merge_id


def set_moved(writer: Writer, merge_id: int, moved: dict[str, list[int]]) -> None:
    """Record which rows merge ``merge_id`` moved (or created), per table."""
    writer.connection.execute(
        schema.merges.update().where(schema.merges.c.id == merge_id).values(moved=moved)
    )


def _move(writer: Writer, prior: int, survivor: int, merge_id: int) -> dict[str, list[int]]:
    """Move every fact of ``prior`` to ``survivor`` (identifiers as aliases); the moved ids per table."""
    moved = {}
    for table in schema.FACT_TABLES:
        ids = list(
            writer.connection.execute(sa.select(table.c.id).where(table.c.patient_id == prior)).scalars()
        )
        if not ids:
            continue
        values: dict[str, Any] = {"patient_id": survivor}
        if table is schema.identifiers:
            values["alias"] = True
        writer.connection.execute(table.update().where(table.c.id.in_(ids)).values(**values))
        moved[table.name] = ids
    patient = writer.select_one(schema.patients, {"id": prior})
    writer.update(schema.patients, patient, {"merged_into_id": survivor}, cause=f"merge {merge_id}")
    c = schema.conflicts
    between = sa.or_(
        sa.and_(c.c.patient_id == prior, c.c.other_patient_id == survivor),
        sa.and_(c.c.patient_id == survivor, c.c.other_patient_id == prior),
    )
    writer.connection.execute(
        c.update()
        .where(between, c.c.resolved_at.is_(None))
        .values(resolved_at=writer.now, resolution=f"merged by merge {merge_id}")
    )
    return moved


def unmerge(writer: Writer, merge_id: int, reason: str, *, links_only: bool = False) -> int:
    """Undo merge ``merge_id``: the rows it moved go back to the prior patient; returns how many moved.

    The conflicts it resolved are open again.

    ``links_only``: refuse a merge that is not a link (LINK_KINDS).
    """
    m = schema.merges
    merge = writer.select_one(m, {"id": merge_id})
    if merge is None:
        raise RecordError(f"there is no merge {merge_id}")
    if links_only and merge["kind"] not in LINK_KINDS:
        raise RecordError(f"merge {merge_id} is a {merge['kind']}, not a link: undo it with unmerge")
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
    # The conflicts the merge settled are open again: the two are two once more.
    c = schema.conflicts
    writer.connection.execute(
        c.update()
        .where(c.c.patient_id.in_([survivor, prior]), c.c.resolution == f"merged by merge {merge_id}")
        .values(resolved_at=None, resolution=None)
    )
    writer.connection.execute(
        m.update().where(m.c.id == merge_id).values(unmerged_at=writer.now, unmerge_reason=reason)
    )
    writer.history(m.name, merge_id, "unmerged_at", None, writer.now)
    return moved
