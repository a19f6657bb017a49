"""Scenario (4): scenario (1)'s intake on a store that already holds 1 million messages.

100,000 of them are queued for a destination that is down.

The pre-filled store is built once (the schema by the engine's own migrations, run by the
engine under test; the rows with the raw sqlite3 module, ``executemany`` in large transactions)
into a cache folder under the data root, named after a hash of the schema and of what is put in
it, so a later run with the same engine schema reuses it; every row then works on a copy. The
rows are realistic: generated messages (``messages.py``, about 1.2 KB) with varied control
ids, senders and types, patient identifiers from a pool of ``PATIENT_IDS``, an ACK each; the
queued ones have their delivery rows to ``outbound``/``partner``, an mllp destination to a port
nothing listens on, which the engine keeps retrying (head of the queue only, the default
``on_error: block``) throughout the row.

Each connection count gets two rows run one after the other with the same configuration: an
empty store, then the pre-filled one. While the load runs on the pre-filled store, a separate
process (``store_client.py``) times searches through the engine's repository: by control id,
and by patient identifier when the engine has ``MessageQuery.patient_id``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.harness import Options, Row, Scenario, measure, row_folder, sweep
from bench.messages import Template, generate, patient_id
from bench.stores import sqlite_url
from bench.systems import BENCH, INTAKE_CHANNEL, EngineSetup, RunContext, System, free_port, python_env

# Bump when the rows put into the pre-filled store change, so that no older cache is reused.
PREFILL_FORMAT = 1
PREFILL_SEED = 4242
PREFILL_TEMPLATES = 2000
PATIENT_IDS = 100_000  # distinct patient identifiers in the pre-filled messages
_FIRST_PATIENT_ID = 7_000_000
_CHUNK = 20_000  # rows per transaction
_SEARCHES = 10  # of each kind, spread over the measured window
_CACHE_FOLDER = "hl7engine-bench-cache"
_CLIENT_TIMEOUT = 120.0
OUTBOUND_CHANNEL, DOWN_DESTINATION = "outbound", "partner"
_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
_FIRST_RECEIVED = datetime(2025, 1, 1, tzinfo=UTC)
_CONTROL_ID_FORMATS = ("{:010d}", "MSG{:09d}", "{:08d}-{:04d}", "LAB.{:012d}")


def channels(down_port: int) -> tuple[dict, ...]:
    """Intake's catch-all first, then the channel whose destination is down.

    The catch-all takes every message of the load.
    """
    outbound = {
        "name": OUTBOUND_CHANNEL,
        "source": "bench",
        "accept": {"types": ["ZZZ"]},  # nothing of the load: its queue is the pre-filled one
        "destinations": [
            {
                "name": DOWN_DESTINATION,
                "type": "mllp",
                "host": "127.0.0.1",
                "port": down_port,
                "connect_timeout_seconds": 5,
                "queue": {"max_attempts": None},
            }
        ],
    }
    return (INTAKE_CHANNEL, outbound)


def control_id(number: int) -> str:
    """The control id of pre-filled message ``number`` (1-based): a few senders' styles."""
    style = _CONTROL_ID_FORMATS[number % len(_CONTROL_ID_FORMATS)]
    return style.format(number, number % 10_000)


def prefill_patient_id(number: int) -> str:
    """The patient identifier (PID-3.1) of pre-filled message ``number``.

    Each identifier recurs about every PATIENT_IDS messages.
    """
    return f"{_FIRST_PATIENT_ID + (number * 7919) % PATIENT_IDS}"


def _header(template: Template) -> dict[str, str]:
    """The header columns of a generated message (MSH-n is field n-1 of the split segment)."""
    msh = (template.head + template.tail).split(b"\r", 1)[0].decode().split("|")
    code, trigger, structure = (msh[8].split("^") + ["", ""])[:3]
    return {
        "sending_application": msh[2],
        "sending_facility": msh[3],
        "receiving_application": msh[4],
        "receiving_facility": msh[5],
        "message_code": code,
        "trigger_event": trigger,
        "message_structure": structure,
        "version": msh[10],
        "processing_id": msh[9],
        "charset": msh[16] if len(msh) > 16 else "",
    }


def _rows(count: int, queued: int, message_columns: list[str]) -> Iterator[tuple[tuple, tuple | None]]:
    """(messages row in ``message_columns`` order, deliveries row or None) for messages 1..count.

    Every n-th message is queued.
    """
    templates = generate(PREFILL_TEMPLATES, seed=PREFILL_SEED)
    prepared = [(t, _header(t), f"|{patient_id(t)}^".encode()) for t in templates]
    queue_every = max(1, count // queued) if queued else 0
    spacing = timedelta(days=365) / max(count, 1)  # a year of traffic
    for number in range(1, count + 1):
        template, header, pid = prepared[number % len(prepared)]
        cid, patient = control_id(number), prefill_patient_id(number)
        raw = template.head + cid.encode() + template.tail.replace(pid, f"|{patient}^".encode(), 1)
        received = (_FIRST_RECEIVED + spacing * number).strftime(_TIMESTAMP)
        is_queued = bool(queue_every) and number % queue_every == 0 and number // queue_every <= queued
        values = {
            "id": number,
            "received_at": received,
            "status_at": received,
            "listener": "bench",
            "channel": OUTBOUND_CHANNEL if is_queued else INTAKE_CHANNEL["name"],
            "peer": f"127.0.0.1:{40000 + number % 20000}",
            "status": "QUEUED" if is_queued else "TRANSFORMED",
            **header,
            "control_id": cid,
            "ack_code": "AA",
            "error": "",
            "raw": raw,
            "ack": b"MSH|^~\\&|HL7ENGINE|HUB|%s|%s|%s||ACK|A%d|P|2.5.1\rMSA|AA|%s\r"
            % (
                header["sending_application"].encode(),
                header["sending_facility"].encode(),
                received[:19].encode(),
                number,
                cid.encode(),
            ),
            "transformed": None,
            "batch_control_id": None,
            "batch_index": None,
            "patient_id": patient,
            "pruned_at": None,
        }
        delivery = (
            (
                number,
                OUTBOUND_CHANNEL,
                DOWN_DESTINATION,
                "QUEUED",
                0,
                received,
                received,
                received,
                None,
                None,
                cid,
                raw,
                None,
                "",
                "",
            )
            if is_queued
            else None
        )
        yield tuple(values[c] for c in message_columns), delivery


_DELIVERY_COLUMNS = (
    "message_id",
    "channel",
    "destination",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "sent_at",
    "superseded_at",
    "control_id",
    "payload",
    "response",
    "response_code",
    "reason",
)


def _fill(database: Path, count: int, queued: int) -> None:
    """Insert the rows with sqlite3, a transaction per chunk.

    The columns are whatever the engine's schema has.
    """
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as connection:
        connection.execute(
            "PRAGMA synchronous=OFF"
        )  # a cache being built: a crash just means building it again
        columns = [row[1] for row in connection.execute("PRAGMA table_info(messages)")]
        unknown = set(columns) - {
            "id",
            "received_at",
            "status_at",
            "listener",
            "channel",
            "peer",
            "status",
            "control_id",
            "ack_code",
            "error",
            "raw",
            "ack",
            "transformed",
            "batch_control_id",
            "batch_index",
            "patient_id",
            "sending_application",
            "sending_facility",
            "receiving_application",
            "receiving_facility",
            "message_code",
            "trigger_event",
            "message_structure",
            "version",
            "processing_id",
            "charset",
            "pruned_at",
        }
        if unknown:
            raise RuntimeError(
                "the engine's messages table has columns the pre-fill does not know: "
                f"{', '.join(sorted(unknown))}"
            )
        insert_message = (
            f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        insert_delivery = (
            f"INSERT INTO deliveries ({', '.join(_DELIVERY_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(_DELIVERY_COLUMNS))})"
        )
        rows = _rows(count, queued, columns)
        for _ in range(0, count, _CHUNK):
            chunk = [row for row, _ in zip(rows, range(_CHUNK))]
            connection.execute("BEGIN")
            connection.executemany(insert_message, [message for message, _ in chunk])
            connection.executemany(
                insert_delivery, [delivery for _, delivery in chunk if delivery is not None]
            )
            connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _record_sibling(database: Path) -> Path:
    """The patient record's own file beside a store's, where the engine under test has one (0025 on)."""
    return database.with_name(f"{database.stem}-record{database.suffix}")


def _store_files(database: Path) -> list[Path]:
    """The store's file and, if the engine made it, its record's: what is cached and copied together."""
    return [database, *[p for p in (_record_sibling(database),) if p.exists()]]


def _schema_digest(database: Path) -> str:
    schemas = []
    for path in _store_files(database):
        with contextlib.closing(sqlite3.connect(path)) as connection:
            schemas.append(
                connection.execute(
                    "SELECT group_concat(sql, ';') FROM"
                    " (SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name)"
                ).fetchone()[0]
            )
    with contextlib.closing(sqlite3.connect(database)) as connection:
        version = connection.execute("SELECT group_concat(version_num) FROM alembic_version").fetchone()[0]
    return f"{';'.join(s or '' for s in schemas)}\n{version}"


def _migrate(context: RunContext, url: str) -> None:
    """Create the schema with the migrations of the engine under test.

    They run in store_client.py, with that engine first on the path.
    """
    argv = [sys.executable, str(BENCH / "store_client.py"), "migrate", url]
    done = subprocess.run(
        argv,
        cwd=context.engine_root,
        env=python_env(context.engine_root),
        capture_output=True,
        text=True,
        timeout=_CLIENT_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the engine's migrations failed: {done.stderr.strip()[-500:]}")


def prefilled_store(options: Options, context: RunContext, *, progress=print) -> tuple[Path, float]:
    """The cached pre-filled store for this engine schema and these counts, and the seconds to get it.

    The store is built when missing.
    """
    started = time.monotonic()
    cache = options.data_root / _CACHE_FOLDER
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / f"building-{time.time_ns()}.db"
    try:
        _migrate(context, sqlite_url(building))
        key = hashlib.sha256(
            (
                f"{_schema_digest(building)}\n"
                f"{PREFILL_FORMAT} {options.prefill_messages} {options.prefill_queued}"
            ).encode()
        ).hexdigest()[:16]
        cached = cache / f"large-store-{key}.db"
        if not cached.exists():
            progress(
                f"  building the pre-filled store ({options.prefill_messages:,} messages,"
                f" {options.prefill_queued:,} queued) into {cache} ..."
            )
            _fill(building, options.prefill_messages, options.prefill_queued)
            for older in cache.glob("large-store-*.db"):  # one cached store at a time: they are large
                older.unlink()
            for built in _store_files(building):
                built.replace(cached.with_name(built.name.replace(building.stem, cached.stem)))
        return cached, time.monotonic() - started
    finally:
        for built in (building, _record_sibling(building)):
            for leftover in (
                built,
                built.with_name(built.name + "-wal"),
                built.with_name(built.name + "-shm"),
            ):
                leftover.unlink(missing_ok=True)


def _copy_to_disk(source: Path, target: Path) -> None:
    """Copy and fsync, so the kernel is not still writing gigabytes of it back while the row is measured."""
    shutil.copyfile(source, target)
    with target.open("rb+") as copied:
        os.fsync(copied.fileno())


class Searches:
    """Searches through the engine's repository during the window, in a process of their own.

    Their times are read once the window ends.
    """

    def __init__(self, url: str, options: Options, context: RunContext):
        count = options.prefill_messages
        numbers = (
            [1 + (count - 1) * k // (_SEARCHES - 1) for k in range(_SEARCHES)]
            if count > 1
            else [1] * _SEARCHES
        )
        self.argv = [
            sys.executable,
            str(BENCH / "store_client.py"),
            "search",
            url,
            "--seconds",
            f"{options.seconds:g}",
            "--control-ids",
            ",".join(control_id(n) for n in numbers),
            "--patient-ids",
            ",".join(prefill_patient_id(n) for n in numbers),
        ]
        self.context = context
        self.timeout = options.seconds + _CLIENT_TIMEOUT
        self.process: subprocess.Popen | None = None
        self.results: dict = {}

    def on_window(self, phase: str, _server) -> None:
        if phase == "start":
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.context.engine_root,
                env=python_env(self.context.engine_root),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        elif self.process is not None:
            out, err = self.process.communicate(timeout=self.timeout)
            if self.process.returncode != 0:
                raise RuntimeError(
                    "the search client failed: "
                    f"{err.strip().splitlines()[-1] if err.strip() else self.process.returncode}"
                )
            self.results = json.loads(out)

    def close(self) -> None:
        """Kill the client if the row ended before it did."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def _measure_row(
    scenario: str,
    system: System,
    connections: int,
    options: Options,
    context: RunContext,
    *,
    prefilled: Path | None,
) -> Row:
    stored = options.prefill_messages if prefilled else 0
    queued = options.prefill_queued if prefilled else 0
    label = (
        f"hl7engine, SQLite, {stored:,} stored + {queued:,} queued"
        if prefilled
        else "hl7engine, SQLite, empty store"
    )
    with row_folder(options, f"bench-large-{connections}-") as folder:
        database = folder / "hl7engine.db"
        copied = time.monotonic()
        if prefilled is not None:
            for cached in _store_files(prefilled):
                _copy_to_disk(cached, database.with_name(cached.name.replace(prefilled.stem, database.stem)))
        copy_seconds = time.monotonic() - copied
        url = sqlite_url(database)
        engine = system.configured(
            label, EngineSetup(channels=channels(free_port()), store_url=url, existing_messages=stored)
        )
        searches = Searches(url, options, context) if prefilled is not None else None
        try:
            row = measure(
                scenario,
                engine,
                connections,
                options,
                context,
                on_window=searches.on_window if searches else None,
            )
        finally:
            if searches is not None:
                searches.close()
    row.observed.update(
        store="prefilled" if prefilled else "empty",
        prefilled_messages=stored,
        prefilled_queued=queued,
        copy_seconds=copy_seconds,
        searches=searches.results if searches else {},
    )
    return row


def run(scenario: Scenario, options: Options, context: RunContext, *, progress=print) -> list[Row]:
    """Get the pre-filled store, then at each connection count an empty-store row and a pre-filled row."""
    if options.systems is not None and "engine" not in options.systems:
        return []
    prefilled, seconds = prefilled_store(options, context, progress=progress)
    progress(
        f"  pre-filled store ready in {seconds:.1f} s: {prefilled}"
        f" ({prefilled.stat().st_size / 2**20:,.0f} MiB)"
    )

    variants = (
        functools.partial(_measure_row, prefilled=None),
        functools.partial(_measure_row, prefilled=prefilled),
    )
    rows = sweep(scenario, options, context, progress=progress, variants=variants)
    for row in rows:
        row.observed["prefill_seconds"] = seconds
    return rows


def figures(row: Row) -> dict[str, str]:
    """The large-store columns of the report."""
    seen = row.observed
    if "store" not in seen:
        return {}
    columns = {
        "store": "empty"
        if seen["store"] == "empty"
        else f"{seen['prefilled_messages']:,} stored, {seen['prefilled_queued']:,} queued",
        "engine start": f"{row.start_seconds:.1f} s" if row.start_seconds is not None else "-",
    }
    for kind, search in seen["searches"].items():
        name = f"{kind.replace('_', '-')} search"
        if not search.get("available"):
            columns[name] = f"not available ({search.get('reason', '')})"
        elif search.get("times_ms"):
            columns[name] = (
                f"median {search['median_ms']:.1f} ms, max {search['max_ms']:.1f} ms"
                f" ({len(search['times_ms'])}"
                f"{', all found' if search['all_found'] else ', SOME NOT FOUND'})"
            )
    return columns
