"""engine/cli/patients.py: ``hl7engine patient worklist/merge/link/unlink/unmerge/resolve`` on a store."""

from __future__ import annotations

import getpass
import json

import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import main as cli
from engine.record.ingest import RecordIngestor
from engine.store.db import create_engine_for
from engine.store.migrations import upgrade
from engine.store.schema import audit_log
from tests.fakes.record import Feeder, hl7

ANNA = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F"


def patient(url: str, *args: str):
    """Run ``hl7engine patient ARGS --db URL`` in-process; the click Result."""
    return CliRunner().invoke(cli, ["patient", *args, "--db", url, "-c", "no-such-config.yaml"])


def test_worklist_then_merge_unmerge_link_unlink_and_resolve(sqlite_url):
    """The possible duplicate is listed; merge, unmerge, link, unlink, resolve each succeed once, audited."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine))
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", ANNA))
    feed(hl7("ADT^A04^ADT_A01", "20240101090000", ANNA.replace("P-1^^^PMS", "E-1^^^EMR"), sender="EMR"))

    listed = patient(sqlite_url, "worklist", "--json")
    assert listed.exit_code == 0, listed.output
    [item] = [json.loads(line) for line in listed.output.splitlines()]
    assert (item["kind"], item["patient_id"], item["other_patient_id"]) == ("possible_duplicate", 2, 1)
    assert patient(sqlite_url, "worklist").output.startswith(f"{item['id']}\tpossible_duplicate\t2\t1\t")

    steps = [
        (("merge", "1", "2", "--reason", "same"), "merge 1: 2 merged into 1"),
        (("unmerge", "1", "--reason", "wrong"), "merge 1 undone: 1 row(s) moved back"),
        (("link", "1", "2", "--reason", "same"), "merge 2: 2 linked to 1"),
        (("unlink", "2", "--reason", "wrong"), "merge 2 unlinked: 1 row(s) moved back"),
        (("resolve", str(item["id"]), "--reason", "two people"), f"conflict {item['id']} resolved"),
    ]
    for args, said in steps:
        result = patient(sqlite_url, *args)
        assert (result.exit_code, result.output.strip()) == (0, said), args
    again = patient(sqlite_url, "unlink", "2", "--reason", "again")
    assert again.exit_code == 1
    assert "already undone" in again.output
    assert patient(sqlite_url, "merge", "1", "2").exit_code == 2  # --reason is required
    assert patient(sqlite_url, "worklist", "--json").output == ""
    with engine.connect() as connection:
        actions = connection.execute(sa.select(audit_log.c.user, audit_log.c.action).order_by(audit_log.c.id))
        assert [tuple(row) for row in actions] == [
            (getpass.getuser(), f"patient.{name}")
            for name in ("merge", "unmerge", "link", "unlink", "resolve")
        ]
    engine.dispose()
