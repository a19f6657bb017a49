"""engine/store/driver/sqlite_reads.py: the stdlib's reads of a SQLite store answer as the repositories do."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from datetime import UTC, timedelta, timezone

import pytest
import sqlalchemy as sa

from engine.errors import StoreError
from engine.hl7.charset import decode
from engine.hl7.terms import search_terms
from engine.model import NewDelivery, Status
from engine.store.cipher import CLEAR, SEALED, Cipher
from engine.store.cluster import ClusterRepository
from engine.store.db import create_engine_for
from engine.store.driver import SQLiteReads, sqlite_path
from engine.store.messages import MessageRepository
from engine.store.migrations import upgrade
from engine.store.reads import ContentSearchOff, DeliverySummary, MessageQuery, StoredMessage
from engine.store.schema import deliveries, messages
from tests.fakes.cluster import add_lease, add_node
from tests.fakes.corpus import corpus_entries
from tests.fakes.messages import T0, new_message
from tests.fakes.store import NOW

SEALING = Cipher({"k1": os.urandom(32)}, "k1")
CHANNELS = ("adt", "lab", None)
STATUSES = (Status.RECEIVED, Status.REJECTED, Status.SENT, Status.ERROR)


def _corpus_messages():
    """Every corpus file as a stored message: channels, statuses, listeners and times spread over them.

    Every third is processed at intake (a QUEUED and a FILTERED delivery, transformed content).
    Times are minutes and microseconds apart, so that a bound falls between two messages.
    """
    found = []
    for n, entry in enumerate(corpus_entries()):
        raw = entry.path.read_bytes()
        message = new_message(
            raw,
            received_at=T0 + timedelta(minutes=n, microseconds=7 * n),
            channel=CHANNELS[n % 3],
            status=STATUSES[n % 4],
            listener=("pms", "lab")[n % 2],
            ack=b"MSH|^~\\&|HUB||||||ACK|A%d|P|2.5\rMSA|AA|X\r" % n if n % 5 else None,
        )
        if n % 3 == 0 and message.channel is not None:
            message = dataclasses.replace(
                message,
                status=Status.QUEUED,
                transformed=raw + b"ZTR|1\r",
                deliveries=(
                    NewDelivery("emr", Status.QUEUED, f"OUT{n}", raw),
                    NewDelivery("archive", Status.FILTERED, f"OUT{n}", None, reason="not for the archive"),
                ),
            )
        found.append(message)
    return found


@pytest.fixture(params=["clear", "sealed"])
def store(request, tmp_path):
    """(SQLAlchemy engine, SQLiteReads, message ids, sealed) on one SQLite file: the corpus, nodes, leases."""
    cipher = CLEAR if request.param == "clear" else SEALING
    path = tmp_path / "data" / "hl7engine.db"
    engine = create_engine_for(f"sqlite:///{path}", cipher=cipher)
    upgrade(engine)
    repository = MessageRepository(engine)
    ids = repository.insert(_corpus_messages())
    while repository.index_pending(limit=1000):
        pass
    with engine.begin() as connection:  # retention removed one message's content
        connection.execute(
            sa.update(messages)
            .where(messages.c.id == ids[4])
            .values(pruned_at=NOW, raw=b"", transformed=None)
        )
    alive = add_node(engine, "a-alive", heartbeat_at=NOW - timedelta(seconds=2))
    dead = add_node(engine, "b-dead", heartbeat_at=NOW - timedelta(minutes=3))
    add_node(engine, "c-stopped", heartbeat_at=NOW - timedelta(hours=2), stopped_at=NOW - timedelta(hours=2))
    add_node(engine, "d-gone", heartbeat_at=NOW - timedelta(days=2))
    add_lease(engine, "channel:adt", alive, expires_at=NOW + timedelta(seconds=8))
    add_lease(engine, "queue:adt/emr", dead, expires_at=NOW - timedelta(minutes=2))
    add_lease(engine, "job:prune", None, expires_at=None)
    reads = SQLiteReads.open(path, cipher)
    yield engine, reads, ids, cipher.sealing
    reads.close()
    engine.dispose()


def _queries(ids: list[int], sealed: bool) -> list[MessageQuery]:
    """Each filter the CLI and the API give, alone and together, with bounds between stored values."""
    middle = T0 + timedelta(minutes=len(ids) // 2, microseconds=3)
    queries = [
        MessageQuery(),
        MessageQuery(limit=1),
        MessageQuery(limit=7, before_id=ids[len(ids) // 2]),
        *(MessageQuery(status=status) for status in (*STATUSES, Status.QUEUED, "FILTERED")),
        *(MessageQuery(channel=channel) for channel in ("adt", "lab", "gone")),
        MessageQuery(listener="pms", status=Status.SENT),
        MessageQuery(since=middle),
        MessageQuery(until=middle),
        MessageQuery(
            since=middle.astimezone(timezone(timedelta(hours=-5))), until=middle + timedelta(hours=1)
        ),
        MessageQuery(since=T0 + timedelta(minutes=3, microseconds=21)),  # exactly message 3's time
        MessageQuery(until=T0 + timedelta(minutes=3, microseconds=21)),
        *(MessageQuery(message_type=kind) for kind in ("ADT", "ADT^A01", "^A01", "ORU^R01^ORU_R01", "ACK")),
        MessageQuery(sending_application="NONE"),
        MessageQuery(channel="adt", status=Status.QUEUED, limit=3),
    ]
    if not sealed:
        queries += [MessageQuery(text=word) for word in ("smith", "s", "doe jane", "1", "zzzzzz-nothing")] + [
            MessageQuery(text="a", channel="lab", before_id=ids[-3], limit=4)
        ]
    return queries


def _column_values(engine, *names: str) -> list[tuple]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(*(messages.c[n] for n in names)).order_by(messages.c.id)))


def test_searches_give_what_the_repository_gives_for_every_filter(store):
    """The same summaries in the same order for every filter: status, channel, since/until, type, text..."""
    engine, reads, ids, sealed = store
    repository = MessageRepository(engine)
    rows = _column_values(engine, "patient_id", "control_id", "sending_application", "sending_facility")
    queries = _queries(ids, sealed)
    queries += [MessageQuery(patient_id=p) for p, *_ in rows[:40:3] if p]
    queries += [MessageQuery(control_id=c) for _, c, *_ in rows[:40:5] if c]
    queries += [MessageQuery(sending_application=a, sending_facility=f) for *_, a, f in rows[1:40:7]]
    matched = 0
    for query in queries:
        expected = repository.search(query)
        assert reads.search(query) == expected, query
        matched += bool(expected)
    assert matched > len(queries) * 2 // 3  # most filters find something: the comparison means something


def test_content_words_are_searched_only_on_a_clear_store(store):
    """Text finds by the index on a clear store; a sealed one refuses, as the repository does."""
    engine, reads, ids, sealed = store
    repository = MessageRepository(engine)
    raw = repository.get(ids[0]).raw
    word = search_terms(decode(raw).text).split()[0]
    query = MessageQuery(text=word)
    if sealed:
        with pytest.raises(ContentSearchOff):
            repository.search(query)
        with pytest.raises(ContentSearchOff):
            reads.search(query)
    else:
        assert ids[0] in [s.id for s in reads.search(query)]
        assert reads.search(query) == repository.search(query)


def test_each_message_with_its_deliveries_and_history_is_what_the_repository_reads(store):
    """get gives every column, the opened content, deliveries and events as MessageRepository.get."""
    engine, reads, ids, _ = store
    repository = MessageRepository(engine)
    for message_id in ids:
        assert reads.get(message_id) == repository.get(message_id)
    processed = reads.get(ids[3])
    assert len(processed.deliveries) == 2 and processed.events and processed.transformed.endswith(b"ZTR|1\r")
    assert reads.get(ids[4]).pruned_at == NOW and reads.get(ids[4]).raw == b""
    assert reads.get(ids[-1] + 1) is None


def test_channel_names_and_the_cluster_view_are_the_repositories(store):
    """The stored channels, and the nodes (states, leases) at one moment, as the repositories say."""
    engine, reads, _, _ = store
    assert reads.channel_names() == MessageRepository(engine).channel_names() == ["adt", "lab"]
    for lease_seconds in (10.0, 600.0):
        view = reads.view(NOW, lease_seconds)
        assert view == ClusterRepository(engine).view(NOW, lease_seconds)
    assert [node.name for node in view.nodes] == ["a-alive", "b-dead", "c-stopped"]
    assert view.unheld == ("job:prune", "queue:adt/emr")


def test_the_dashboard_counts_and_the_pauses_are_the_repositories(store):
    """Counts over windows (with settled and failed deliveries, queues named or not) and pauses, alike."""
    from engine.store.controls import ControlRepository
    from engine.store.dashboard import DashboardRepository

    engine, reads, ids, _ = store
    with engine.begin() as connection:  # some deliveries settled or failed, a minute apart
        queued = connection.execute(
            sa.select(deliveries.c.id).where(deliveries.c.status == Status.QUEUED).order_by(deliveries.c.id)
        ).scalars()
        for n, delivery in enumerate(list(queued)[:6]):
            connection.execute(
                sa.update(deliveries)
                .where(deliveries.c.id == delivery)
                .values(
                    status=(Status.SENT, Status.ERROR)[n % 2],
                    reason=f"reason {n}",
                    attempts=n,
                    updated_at=T0 + timedelta(minutes=n, microseconds=n),
                )
            )
    controls = ControlRepository(engine, clock=lambda: NOW)
    controls.pause("adt", "", by="cli:me", reason="maintenance")
    controls.halt("adt", "emr", 42, "ERROR at the head")
    controls.pause("lab", "archive", by="console:you")
    dashboard = DashboardRepository(engine)
    queues = [("adt", "emr"), ("lab", "archive"), ("gone", "nowhere")]
    for since in (T0 - timedelta(days=1), T0 + timedelta(minutes=3, microseconds=3), NOW):
        for named in (queues, []):
            expected = dashboard.counts(since, named)
            found = reads.counts(since, named)
            assert dataclasses.replace(found, at=expected.at) == expected, (since, named)
    assert dashboard.counts(T0 - timedelta(days=1), []).queues  # the window had settled deliveries
    assert reads.pauses() == controls.pauses() and len(controls.pauses()) == 3


def test_the_content_columns_read_are_those_the_schema_seals():
    """The reader opens its bytes fields: exactly the sealed columns of messages and deliveries."""
    sealed = {c.name for table in (messages, deliveries) for c in table.c if c.info.get(SEALED)}
    read = {
        f.name
        for cls in (StoredMessage, DeliverySummary)
        for f in dataclasses.fields(cls)
        if "bytes" in f.type
    }
    assert read == sealed


@pytest.mark.parametrize(
    "url",
    ["sqlite:///data/hl7engine.db", "sqlite:////srv/hl7 engine/x.db", "sqlite+pysqlite:///x.db"],
)
def test_a_plain_sqlite_url_names_the_file_sqlalchemy_opens(url):
    """sqlite_path reads the file SQLAlchemy would."""
    assert str(sqlite_path(url)) == sa.engine.make_url(url).database


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u@h/db",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "sqlite:////tmp/x%20y.db",
        "sqlite:///file:x.db?uri=true",
    ],
)
def test_other_urls_are_left_to_sqlalchemy(url):
    """PostgreSQL, memory, queries and escapes: no path, the command uses SQLAlchemy."""
    assert sqlite_path(url) is None


def test_no_file_and_a_file_without_messages_are_refused_and_nothing_is_created(tmp_path):
    """A missing file stays missing; a database without a messages table is no store."""
    missing = tmp_path / "none.db"
    with pytest.raises(StoreError, match="opening the store failed"):
        SQLiteReads.open(missing, CLEAR)
    assert not missing.exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="not an hl7engine store"):
        SQLiteReads.open(other, CLEAR)


def test_a_time_is_compared_in_utc_whatever_its_offset(store):
    """since given at +02:00 finds what the same instant in UTC finds."""
    _, reads, _, _ = store
    instant = T0 + timedelta(minutes=10, microseconds=70)
    at_utc = reads.search(MessageQuery(since=instant, limit=1000))
    elsewhere = reads.search(MessageQuery(since=instant.astimezone(timezone(timedelta(hours=2))), limit=1000))
    assert at_utc == elsewhere and at_utc[-1].received_at == instant.astimezone(UTC)


def test_the_record_worklist_is_read_as_the_record_operator_reads_it(tmp_path):
    """Open conflicts only, oldest first, limited, with the same values and times as RecordOperator's."""
    from engine.record.ingest import RecordIngestor
    from engine.record.operations import Operator, RecordOperator
    from tests.fakes.record import Feeder, hl7

    path = tmp_path / "hl7engine.db"
    engine = create_engine_for(f"sqlite:///{path}", cipher=SEALING)
    upgrade(engine)
    feed = Feeder(engine, RecordIngestor(engine))
    anna = "PID|1||P-1^^^PMS^MR||SMITH^ANNA||19800517|F"
    feed(hl7("ADT^A04^ADT_A01", "20240101080000", anna))
    for n in range(2, 6):  # each another system's number for the same demographics: possible duplicates
        feed(
            hl7(
                "ADT^A04^ADT_A01",
                f"2024010{n}090000",
                anna.replace("P-1^^^PMS", f"E-{n}^^^EMR{n}"),
                sender="EMR",
            )
        )
    operator = RecordOperator(engine)
    first = operator.worklist()[0]["id"]
    operator.resolve(first, reason="two people", by=Operator("test", "cli"))
    reads = SQLiteReads.open(path, SEALING)
    try:
        expected = operator.worklist()
        assert len(expected) >= 3 and first not in {item["id"] for item in expected}
        assert reads.worklist() == expected
        assert reads.worklist(limit=2) == operator.worklist(limit=2) == expected[:2]
    finally:
        reads.close()
        engine.dispose()
