"""engine.store.migrations: Alembic revisions produce exactly engine.store.schema.metadata."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from engine.record.ingest import RecordIngestor
from engine.store.configs import ConfigRepository
from engine.store.db import create_engine_for
from engine.store.migrations import SCRIPT_LOCATION, make_config, upgrade
from tests.fakes.record import NOW, Feeder, register
from tests.fakes.store import schema_differences


def _migrate(engine: sa.Engine, command_name: str, revision: str) -> None:
    """Run ``alembic upgrade|downgrade revision`` on the engine's database."""
    with engine.begin() as connection:
        getattr(command, command_name)(make_config(connection), revision)


def _current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_migrated_schema_matches_metadata(store_url):
    """After upgrade head, Alembic autogenerate finds no difference from the metadata."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    differences = schema_differences(engine)
    engine.dispose()
    assert differences == []


def test_upgrade_is_idempotent_and_reaches_head(store_url):
    """Upgrading twice is harmless and leaves the database at the newest revision."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as connection:
        head = ScriptDirectory.from_config(make_config(connection)).get_current_head()
    assert _current_revision(engine) == head == "0025"
    engine.dispose()


def test_concurrent_upgrades_wait_for_each_other(store_url):
    """Engines starting together on an empty database both succeed: one migrates, the other finds it done."""
    engines = [create_engine_for(store_url) for _ in range(3)]
    errors = []

    def run(engine):
        try:
            upgrade(engine)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert _current_revision(engines[0]) == "0025"
    for engine in engines:
        engine.dispose()


def test_scripts_ship_inside_the_package():
    """The revision scripts live in the package folder, so an installed engine can migrate."""
    assert (SCRIPT_LOCATION / "env.py").is_file()
    assert sorted(p.name for p in (SCRIPT_LOCATION / "versions").glob("*.py")) == [
        "0001_messages.py",
        "0002_channels.py",
        "0003_record.py",
        "0004_audit.py",
        "0005_patient_id.py",
        "0006_queue_indexes.py",
        "0007_drop_channel_index.py",
        "0008_patient_list_digests.py",
        "0012_web_sessions.py",
        "0013_inputs.py",
        "0014_message_retention.py",
        "0015_sealed_person_data.py",
        "0016_cluster.py",
        "0017_controls.py",
        "0020_record_namespaces.py",
        "0021_record_links.py",
        "0022_message_text.py",
        "0023_record_ssn.py",
        "0024_status_index.py",
        "0025_record_file.py",
    ]


def test_0002_keeps_messages_stored_under_0001(store_url):
    """A database with messages of revision 0001 upgrades to head; rows stay, without transformed content."""
    engine = create_engine_for(store_url)
    _migrate(engine, "upgrade", "0001")
    at = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    empty = (
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "message_code",
        "trigger_event",
        "message_structure",
        "control_id",
        "version",
        "processing_id",
        "charset",
        "ack_code",
        "error",
    )
    row = {
        "received_at": at,
        "status_at": at,
        "listener": "l",
        "channel": "adt",
        "peer": "p",
        "status": "SENT",
        "raw": b"MSH|^~\\&|A\r",
        "ack": None,
    }
    row.update(dict.fromkeys(empty, ""))
    with engine.begin() as connection:
        connection.execute(sa.table("messages", *(sa.column(name) for name in row)).insert(), row)
    upgrade(engine)
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT channel, status, raw, transformed FROM messages")).one()
    engine.dispose()
    assert tuple(stored) == ("adt", "SENT", b"MSH|^~\\&|A\r", None)


def test_0002_downgrades_to_0001(store_url):
    """Downgrading to 0001 and upgrading again leaves a database that matches the metadata."""
    engine = create_engine_for(store_url)
    upgrade(engine)
    _migrate(engine, "downgrade", "0001")
    assert _current_revision(engine) == "0001"
    upgrade(engine)
    differences = schema_differences(engine)
    engine.dispose()
    assert differences == []


def test_0013_keeps_files_and_configs_recorded_before(store_url):
    """Rows of revision 0008 upgrade to head: a file read before has modification time 0 (no real file
    has it, so none is taken for a file a crash left unmoved); a configuration recorded before has no
    inputs."""
    engine = create_engine_for(store_url)
    _migrate(engine, "upgrade", "0008")
    at = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    file_row = {"path": "/in/a.hl7", "sha256": "a" * 64, "size": 9, "read_at": at, "message_count": 1}
    config_row = {"applied_at": at, "source": "c.yaml", "sha256": "c" * 64, "content": "x", "changes": "y"}
    with engine.begin() as connection:
        for table, row in (("source_files", file_row), ("config_history", config_row)):
            connection.execute(sa.table(table, *(sa.column(name) for name in row)).insert(), row)
    upgrade(engine)
    with engine.connect() as connection:
        moved = connection.execute(sa.text("SELECT modified_ns, moved_to FROM source_files")).one()
    [config] = ConfigRepository(engine).config_history()
    engine.dispose()
    assert tuple(moved) == (0, None)
    assert (config.content, config.inputs) == ("x", None)


def test_0012_redacts_password_hashes_already_in_the_config_history(store_url):
    """Configs recorded before 0012 lose their web users' hashes; everything else in them stays."""
    engine = create_engine_for(store_url)
    _migrate(engine, "upgrade", "0008")
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    content = 'engine:\n  http:\n    users:\n      alice: "pbkdf2_sha256$600000$Xq3abc_-$k2V+/abc="\n'
    history = sa.table(
        "config_history",
        *(sa.column(name) for name in ("applied_at", "source", "sha256", "content", "changes")),
    )
    with engine.begin() as connection:
        connection.execute(
            history.insert(),
            [
                {"applied_at": at, "source": "a.yaml", "sha256": "0" * 64, "content": content, "changes": ""},
                {
                    "applied_at": at,
                    "source": "b.yaml",
                    "sha256": "1" * 64,
                    "content": "channels: []",
                    "changes": "",
                },
            ],
        )
    upgrade(engine)
    with engine.connect() as connection:
        contents = (
            connection.execute(sa.text("SELECT content FROM config_history ORDER BY id")).scalars().all()
        )
    engine.dispose()
    assert contents == [
        'engine:\n  http:\n    users:\n      alice: "pbkdf2_sha256$<redacted>"\n',
        "channels: []",
    ]


def test_0020_gives_appointments_and_orders_recorded_before_their_sender_as_namespace(store_url):
    """Ids of 0016 get their message's MSH-3 (HD-1) as namespace, none if it was purged; downgrade drops."""
    engine = create_engine_for(store_url)
    _migrate(engine, "upgrade", "0016")
    at = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    message = {
        "received_at": at,
        "status_at": at,
        "listener": "l",
        "peer": "p",
        "status": "SENT",
        "raw": b"MSH|^~\\&|LAB^1.2.3^ISO\r",
        "sending_application": "LAB^1.2.3^ISO",
        **dict.fromkeys(
            (
                "sending_facility",
                "receiving_application",
                "receiving_facility",
                "message_code",
                "trigger_event",
                "message_structure",
                "control_id",
                "version",
                "processing_id",
                "charset",
                "ack_code",
                "error",
            ),
            "",
        ),
    }
    patient = {"id": 1, "created_at": at, "updated_at": at, "as_of": at}
    appointment = {"patient_id": 1, "status": "Booked", "as_of": at, "placer_id": "PL-1"}
    orders = [
        {"patient_id": 1, "as_of": at, "placer_number": "P-1", "filler_number": "F-1", "message_id": 1},
        {"patient_id": 1, "as_of": at, "filler_number": "F-2", "message_id": None},
    ]
    with engine.begin() as connection:
        connection.execute(sa.table("messages", *(sa.column(name) for name in message)).insert(), message)
        for table, rows in (
            ("record_patients", [patient]),
            ("record_appointments", [{**appointment, "message_id": 1}]),
            ("record_orders", orders),
        ):
            columns = sorted({name for row in rows for name in row})
            full = [{name: row.get(name) for name in columns} for row in rows]
            connection.execute(sa.table(table, *(sa.column(name) for name in columns)).insert(), full)
    upgrade(engine)
    with engine.connect() as connection:
        appointments = connection.execute(
            sa.text("SELECT placer_namespace, filler_namespace FROM record_appointments")
        ).all()
        namespaces = connection.execute(
            sa.text("SELECT placer_namespace, filler_namespace FROM record_orders ORDER BY id")
        ).all()
    _migrate(engine, "downgrade", "0016")
    with engine.connect() as connection:
        columns = {c["name"] for c in sa.inspect(connection).get_columns("record_orders")}
    engine.dispose()
    assert [tuple(row) for row in appointments] == [("LAB", None)]
    assert [tuple(row) for row in namespaces] == [("LAB", "LAB"), (None, None)]
    assert "filler_namespace" not in columns


def _record_rows(engine: sa.Engine, schema: str) -> list[tuple]:
    """(patient id, applied message id) of every applied mark in ``schema``'s record_applied_messages."""
    with engine.connect() as connection:
        return connection.exec_driver_sql(
            f"SELECT patient_id, message_id FROM {schema}.record_applied_messages ORDER BY message_id"
        ).all()


def _tables(engine: sa.Engine, schema: str) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.exec_driver_sql(
                f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name LIKE 'record%'"
            ).scalars()
        )


def _references_to_messages(engine: sa.Engine, schema: str) -> int:
    """How many of ``schema``'s record tables reference messages."""
    names = _tables(engine, schema)
    with engine.connect() as connection:
        # A PRAGMA reads the schema the connection last loaded: a statement first loads the new one.
        connection.exec_driver_sql(f"SELECT count(*) FROM {schema}.sqlite_master").scalar()
        return sum(
            any(
                row[2] == "messages"
                for row in connection.exec_driver_sql(f'PRAGMA {schema}.foreign_key_list("{n}")')
            )
            for n in names
        )


def test_0025_moves_a_populated_record_into_its_file_and_back(sqlite_url):
    """A record applied under 0024 moves into the record's file (without references to messages),
    its rows and indexes with it; downgrading brings it back into main with them."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    _migrate(engine, "downgrade", "0024")
    assert _tables(engine, "record") == set()
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    patients = [register(feed, f"PID|1||P-{n}^^^PMS^PI||DOE^JANE{n}||19700101|F") for n in range(3)]
    before = _record_rows(engine, "main")
    assert [patient for patient, _ in before] == patients
    assert _references_to_messages(engine, "main") == 20

    upgrade(engine)
    assert (_tables(engine, "main"), _record_rows(engine, "record")) == (set(), before)
    assert _references_to_messages(engine, "record") == 0
    assert schema_differences(engine) == []
    register(feed, "PID|1||P-9^^^PMS^PI||DOE^JOHN||19700101|M")  # the moved record goes on

    _migrate(engine, "downgrade", "0024")
    assert (_tables(engine, "record"), len(_record_rows(engine, "main"))) == (set(), 4)
    assert _references_to_messages(engine, "main") == len(_tables(engine, "main")) == 20
    engine.dispose()


def test_a_crash_between_the_two_files_commits_leaves_the_move_to_the_next_start(sqlite_url):
    """Revision 0025 committed (main's record tables renamed) but not the copy: the next upgrade()
    copies them into the record's file again, over a stale copy a crash may have left there."""
    engine = create_engine_for(sqlite_url)
    upgrade(engine)
    _migrate(engine, "downgrade", "0024")
    feed = Feeder(engine, RecordIngestor(engine, clock=lambda: NOW))
    register(feed, "PID|1||P-1^^^PMS^PI||DOE^JANE||19700101|F")
    with engine.begin() as connection:  # a stale copy, as a crash during a downgrade leaves one
        connection.exec_driver_sql(
            "CREATE TABLE record.record_applied_messages"
            " AS SELECT * FROM main.record_applied_messages WHERE 0"
        )
    _migrate(engine, "upgrade", "0025")  # main committed alone: the copy never was
    assert _record_rows(engine, "record") == []
    upgrade(engine)
    assert len(_record_rows(engine, "record")) == 1
    assert _tables(engine, "main") == set()
    assert schema_differences(engine) == []
    engine.dispose()
