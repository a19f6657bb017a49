"""engine/record/operations.py: an operator's merge, link, unlink, unmerge and resolve, each audited."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.errors import RecordError
from engine.record.operations import Operator, RecordOperator
from engine.record.query import get_patient
from engine.store.schema import audit_log
from tests.fakes.record import NOW, hl7, register

BY = Operator("ops", "127.0.0.1")
ANNA = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F"
ANNE = "PID|1||E-1^^^EMR^MR||SMITH^ANNE||19800517|F"


def audit(engine) -> list[tuple]:
    """(user, action, remote, detail) of every audit row, oldest first."""
    c = audit_log.c
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(sa.select(c.user, c.action, c.remote, c.detail).order_by(c.id))
        ]


@pytest.fixture
def operator(engine) -> RecordOperator:
    """A RecordOperator with the tests' clock."""
    return RecordOperator(engine, clock=lambda: NOW)


def test_merge_unmerge_link_unlink_round_trip_with_audit_rows(feed, operator):
    """Merge then unmerge, link then unlink: both patients as before each time, four audit rows."""
    register(feed, ANNA)
    register(feed, ANNE, sender="EMR")
    before = {n: get_patient(feed.engine, n)["identifiers"] for n in (1, 2)}
    merge_id = operator.merge(1, 2, reason="same person, checked", by=BY)
    assert [i["value"] for i in get_patient(feed.engine, 1)["identifiers"]] == ["P-1", "E-1"]
    assert get_patient(feed.engine, 2)["merged_into"] == 1
    assert operator.unmerge(merge_id, reason="was wrong", by=BY) == 1
    link_id = operator.link(1, 2, reason="same person", by=BY)
    assert operator.unlink(link_id, reason="not the same", by=BY) == 1
    assert {n: get_patient(feed.engine, n)["identifiers"] for n in (1, 2)} == before
    assert get_patient(feed.engine, 2)["merged_into"] is None
    assert audit(feed.engine) == [
        ("ops", "patient.merge", "127.0.0.1", "patients 2 into 1 -> 1; reason: same person, checked"),
        ("ops", "patient.unmerge", "127.0.0.1", "merge 1 -> 1; reason: was wrong"),
        ("ops", "patient.link", "127.0.0.1", "patients 2 into 1 -> 2; reason: same person"),
        ("ops", "patient.unlink", "127.0.0.1", "merge 2 -> 1; reason: not the same"),
    ]


def test_unlink_refuses_a_merge_and_link_refuses_contradicting_patients(feed, operator):
    """unlink undoes links only; a link of patients whose sex differs is refused; nothing is audited."""
    register(feed, ANNA)
    register(feed, ANNE.replace("|F", "|M"), sender="EMR")
    with pytest.raises(RecordError, match="differ in sex"):
        operator.link(1, 2, reason="same?", by=BY)
    merge_id = operator.merge(1, 2, reason="same person", by=BY)
    with pytest.raises(RecordError, match="not a link"):
        operator.unlink(merge_id, reason="oops", by=BY)
    with pytest.raises(RecordError, match="give a reason"):
        operator.merge(1, 2, reason=" ", by=BY)
    with pytest.raises(RecordError, match="was merged into 1"):
        operator.merge(2, 1, reason="again", by=BY)
    assert [row[1] for row in audit(feed.engine)] == ["patient.merge"]


def test_resolve_dismisses_a_worklist_item_once(feed, operator):
    """A possible duplicate leaves the worklist when resolved, with the reason; once only."""
    register(feed, ANNA)
    feed(hl7("ADT^A04^ADT_A01", "20240102080000", ANNA.replace("P-1^^^PMS", "E-1^^^EMR"), sender="EMR"))
    [item] = operator.worklist()
    assert item["kind"] == "possible_duplicate"
    operator.resolve(item["id"], reason="two people", by=BY)
    assert operator.worklist() == []
    [conflict] = get_patient(feed.engine, 2)["conflicts"]
    assert conflict["resolution"] == "two people"
    with pytest.raises(RecordError, match="resolved already"):
        operator.resolve(item["id"], reason="again", by=BY)
    assert audit(feed.engine)[-1][1:] == (
        "patient.resolve",
        "127.0.0.1",
        "conflict 1 -> 1; reason: two people",
    )
