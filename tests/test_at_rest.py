"""Encryption at rest, end to end: a copied database file shows no patient data; rotation and rekey.

A real engine (MLLP in, a ``record`` destination, the web API) on SQLite with
``engine.store.encryption``; then the CLI on the same file. What stays in clear by design
(docs/reliability/encryption.md): the MSH header columns (control id, sender, type), the
identifier values (``messages.patient_id``, ``record_identifiers.value``: the MRN), the birth
date and sex, statuses, times and error texts.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest_twisted
import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import main as cli
from engine.config import load_config
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.service import Engine
from engine.store.cipher import Cipher
from tests.fakes.harness import in_thread, statuses, wait_until
from tests.fakes.web import USERS, basic, fetch

FAMILY, GIVEN = "QUIXOTLWOOD", "ZEPHYRINA"
STREET, CITY, PHONE = "1742 VERMILLION LANTERN RD", "OXBRIDGETON", "(555)867-5309"
MRN = "QX-77031"
# What must be found nowhere in the database file or its WAL, in any case.
SECRETS = (FAMILY, GIVEN, "VERMILLION", CITY, "867-5309", "MSH|", "PID|", "EVN|", "MSA|")


def message(n: int) -> bytes:
    """ADT^A04/A08 number ``n`` of the one distinctive patient (generated, v2.5.1)."""
    event = "A04" if n == 0 else "A08"
    return (
        f"MSH|^~\\&|NORTHPMS|NORTH|HUB|TEST|2026120701000{n}||ADT^{event}^ADT_A01|ENC{n}|P|2.5.1\r"
        f"EVN|{event}|2026120701000{n}\r"
        f"PID|1||{MRN}^^^NORTHPMS^MR||{FAMILY}^{GIVEN}^M||19710304|F|||"
        f"{STREET}^^{CITY}^NY^10987||{PHONE}\r"
    ).encode()


def write_config(tmp_path: Path, keys: dict[str, str], current: str) -> Path:
    """channels.yaml with these key files (id -> file name under tmp_path) and the current key."""
    listed = "\n".join(f"        {key_id}: {{file: {name}}}" for key_id, name in keys.items())
    path = tmp_path / "channels.yaml"
    path.write_text(
        f"""
engine:
  data_dir: data
  store:
    encryption:
      key: {current}
      index: {{file: index.key}}
      keys:
{listed}
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
    users: {{alice: "{USERS["alice"]}"}}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: adt
    source: main
    accept: {{types: ["*"]}}
    destinations:
      - {{name: record, type: record}}
"""
    )
    return path


def stored_bytes(tmp_path: Path) -> bytes:
    """The database file and its WAL as a copy of them would hold them."""
    data = tmp_path / "data"
    return b"".join(p.read_bytes() for p in (data / "hl7engine.db", data / "hl7engine.db-wal") if p.exists())


def leaked(raw: bytes) -> list[str]:
    """Which SECRETS the bytes hold, in upper, lower or title case."""
    return [s for s in SECRETS for form in {s, s.lower(), s.title()} if form.encode() in raw]


def raw_keys(tmp_path: Path) -> list[str | None]:
    """The key id of each message's raw bytes, in id order."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'hl7engine.db'}")
    with engine.connect() as connection:
        raws = connection.execute(sa.text("SELECT raw FROM messages ORDER BY id")).scalars().all()
    engine.dispose()
    return [Cipher().key_of(raw) for raw in raws]


@pytest_twisted.inlineCallbacks
def run_engine(config_path: Path, payloads: list[bytes], check):
    """Start the engine, send ``payloads`` and wait until all are SENT, call ``check(base_url)``, stop."""
    from twisted.internet import reactor

    engine = Engine(load_config(config_path), reactor)
    engine.startService()
    try:

        def send():
            with MLLPClient("127.0.0.1", engine.listeners["main"].port, timeout=20) as client:
                return [parse_reply(client.request(p)).code for p in payloads]

        codes = yield in_thread(send)
        assert codes == ["AA"] * len(payloads)
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: set(s.values()) == {"SENT"}))
        yield check(f"http://127.0.0.1:{engine.web.port}")
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_copied_database_shows_no_patient_data_and_keys_rotate(tmp_path):
    """Sealed content and person data in the file and WAL; API and CLI show them; rotate, rekey, drop k1."""
    for name in ("k1.key", "k2.key", "index.key"):
        (tmp_path / name).write_text(base64.b64encode(name.encode().ljust(32, b"#")).decode())
    first = write_config(tmp_path, {"k1": "k1.key"}, "k1")

    @pytest_twisted.inlineCallbacks
    def check_api(base):
        assert leaked(stored_bytes(tmp_path)) == []  # while the engine runs: the file and its WAL
        shown = yield in_thread(fetch, f"{base}/api/messages/1", headers=basic())
        assert FAMILY in shown.json()["raw"]
        found = yield in_thread(fetch, f"{base}/api/patients?name={FAMILY.lower()}", headers=basic())
        [person] = found.json()["patients"]
        detail = (yield in_thread(fetch, f"{base}/api/patients/{person['id']}", headers=basic())).json()
        assert [(n["family"], n["given"]) for n in detail["names"]] == [(FAMILY, GIVEN)]
        assert detail["addresses"][0]["line1"] == STREET and detail["telecoms"][0]["value"] == PHONE
        assert [i["value"] for i in detail["identifiers"]] == [MRN]

    yield run_engine(first, [message(0), message(1)], check_api)
    assert leaked(stored_bytes(tmp_path)) == []
    runner = CliRunner()
    show = runner.invoke(cli, ["messages", "show", "1", "-c", str(first), "--json"])
    assert show.exit_code == 0, show.output
    assert FAMILY in json.loads(show.output)["raw"]

    # Rotation: k2 seals what is written now; what k1 sealed still reads.
    rotated = write_config(tmp_path, {"k1": "k1.key", "k2": "k2.key"}, "k2")

    @pytest_twisted.inlineCallbacks
    def check_old_and_new(base):
        for message_id in (1, 3):
            shown = yield in_thread(fetch, f"{base}/api/messages/{message_id}", headers=basic())
            assert FAMILY in shown.json()["raw"]

    yield run_engine(rotated, [message(2)], check_old_and_new)
    assert raw_keys(tmp_path) == ["k1", "k1", "k2"]
    rekeyed = runner.invoke(cli, ["rekey", "-c", str(rotated), "--batch", "2"])
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "messages.raw: 2 resealed" in rekeyed.output
    assert raw_keys(tmp_path) == ["k2", "k2", "k2"]

    # k1 removed: everything still reads, through the CLI and the API.
    only_k2 = write_config(tmp_path, {"k2": "k2.key"}, "k2")
    show = runner.invoke(cli, ["messages", "show", "1", "-c", str(only_k2), "--json"])
    assert show.exit_code == 0, show.output
    assert FAMILY in json.loads(show.output)["raw"]

    @pytest_twisted.inlineCallbacks
    def check_without_k1(base):
        found = yield in_thread(fetch, f"{base}/api/patients?identifier={MRN}", headers=basic())
        [person] = found.json()["patients"]
        assert [(n["family"], n["given"]) for n in person["names"]] == [(FAMILY, GIVEN)]
        shown = yield in_thread(fetch, f"{base}/api/messages/1", headers=basic())
        assert FAMILY in shown.json()["raw"]

    yield run_engine(only_k2, [message(3)], check_without_k1)
    assert leaked(stored_bytes(tmp_path)) == []
    # The config history holds the key references, never a key.
    keys = [(tmp_path / name).read_text().encode() for name in ("k1.key", "k2.key", "index.key")]
    assert b"k2.key" in stored_bytes(tmp_path) and not any(key in stored_bytes(tmp_path) for key in keys)


@pytest_twisted.inlineCallbacks
def test_keys_rotate_on_reload_without_a_restart(tmp_path):
    """A reload with a new current key seals what comes next with it, keeps reading the old; no restart."""
    from twisted.internet import reactor

    for name in ("k1.key", "k2.key", "index.key", "other.key"):
        (tmp_path / name).write_text(base64.b64encode(name.encode().ljust(32, b"#")).decode())
    engine = Engine(load_config(write_config(tmp_path, {"k1": "k1.key"}, "k1")), reactor)
    engine.startService()
    try:
        port = engine.listeners["main"].port

        def send(payload: bytes) -> str:
            with MLLPClient("127.0.0.1", port, timeout=20) as client:
                return parse_reply(client.request(payload)).code

        assert (yield in_thread(send, message(0))) == "AA"
        report = yield engine.reload(
            load_config(write_config(tmp_path, {"k1": "k1.key", "k2": "k2.key"}, "k2"))
        )
        assert "encryption keys applied: new content sealed with key k2" in report.changes
        assert report.restart_needed == [] and engine.listeners["main"].port == port
        assert (yield in_thread(send, message(1))) == "AA"
        yield wait_until(lambda: statuses(engine).addCallback(lambda s: set(s.values()) == {"SENT"}))
        assert raw_keys(tmp_path) == ["k1", "k2"]
        old = yield engine.store.get(1)
        assert FAMILY.encode() in old.raw
        moved = write_config(tmp_path, {"k2": "k2.key"}, "k2").read_text().replace("index.key", "other.key")
        (tmp_path / "channels.yaml").write_text(moved)
        report = yield engine.reload(load_config(tmp_path / "channels.yaml"))
        assert report.restart_needed == ["encryption switched on or off, or its index key: at the next start"]
    finally:
        yield engine.stopService()
