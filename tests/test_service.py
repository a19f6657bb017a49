"""The running engine: its listeners as configured, and its reload (only what changed restarts; a
config with problems is refused whole).

Everything is observed from outside over loopback: the reload's report, the ACK code a message
gets (AR when no channel takes it), and whether a connection opened before the reload still works.
"""

from __future__ import annotations

import hashlib
import socket
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from engine.channels.wakeups import Wakeups
from engine.config import load_config
from engine.errors import ConfigError
from engine.hl7.ack import parse_reply
from engine.hl7.message import Message
from engine.hl7.mllp import frame
from engine.listeners.client import MLLPClient
from engine.model import Status
from engine.service import Engine
from engine.store.reads import MessageQuery
from engine.web.passwords import hash_password
from tests.fakes.harness import BASIC_CONFIG, in_thread, make_config, port_of, start_engine, wait_until
from tests.fakes.listeners import read_until_closed
from tests.fakes.messages import pms_message
from tests.fakes.store import later
from tests.fakes.web import fetch

ADT = b"MSH|^~\\&|PMS|NORTH|HUB|TEST|20260101120000||ADT^A04^ADT_A01|A1|P|2.5.1\rPID|1||1^^^PMS^MR\r"
ORU = b"MSH|^~\\&|LAB|NORTH|HUB|TEST|20260101120000||ORU^R01^ORU_R01|O1|P|2.5.1\rPID|1||1^^^PMS^MR\r"
SIU = b"MSH|^~\\&|SCH|NORTH|HUB|TEST|20260101120000||SIU^S12^SIU_S12|S1|P|2.5.1\rSCH|1\r"

ENGINE = """
engine:
  application: {application}
  facility: TEST
  data_dir: {{data_dir}}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
    idle_timeout_seconds: {idle}
{listeners}
channels:
{channels}
"""


def channel(name: str, *types: str, source: str = "main") -> str:
    """A channels item that stores the message types given, fed by ``source``."""
    return f"  - name: {name}\n    source: {source}\n    accept:\n      types: [{', '.join(types)}]\n"


def listener(name: str) -> str:
    """A listeners item on an ephemeral loopback port."""
    return f'  - name: {name}\n    endpoint: "tcp:0:interface=127.0.0.1"\n'


def text(*channels: str, listeners: str = "", application: str = "HUB", idle: int = 300) -> str:
    """The YAML of an engine with the listener ``main``, the other listeners and the channels given."""
    return ENGINE.format(application=application, idle=idle, listeners=listeners, channels="".join(channels))


def config(tmp_path, yaml: str):
    """The Config of ``yaml``, its data under tmp_path."""
    return make_config(tmp_path, text=yaml)


def codes(port: int, *payloads: bytes) -> list[str]:
    """The ACK code each payload gets over a new connection."""
    with MLLPClient("127.0.0.1", port, timeout=20) as client:
        return [parse_reply(client.request(payload)).code for payload in payloads]


def request(client: MLLPClient, payload: bytes) -> str:
    """The ACK code one payload gets over a connection already open."""
    return parse_reply(client.request(payload)).code


@pytest_twisted.inlineCallbacks
def test_a_reload_without_change_says_so_and_keeps_every_connection(tmp_path):
    """The same config again: 'no change', the listener keeps its port and open connections."""
    engine = start_engine(config(tmp_path, text(channel("adt", "ADT"))))
    client = MLLPClient("127.0.0.1", port_of(engine), timeout=20)
    try:
        port = port_of(engine)
        assert (yield in_thread(request, client, ADT)) == "AA"
        report = yield engine.reload(config(tmp_path, text(channel("adt", "ADT"))))
        assert str(report) == "no change"
        assert port_of(engine) == port
        assert (yield in_thread(request, client, ADT)) == "AA"
    finally:
        client.close()
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_changed_channel_applies_to_connections_already_open(tmp_path):
    """A channel that now takes ORU too answers ORU AA on the connection that got AR before."""
    engine = start_engine(config(tmp_path, text(channel("adt", "ADT"))))
    client = MLLPClient("127.0.0.1", port_of(engine), timeout=20)
    try:
        assert (yield in_thread(request, client, ORU)) == "AR"
        report = yield engine.reload(config(tmp_path, text(channel("adt", "ADT", "ORU"))))
        assert str(report) == "channel adt changed"
        assert (yield in_thread(request, client, ORU)) == "AA"
    finally:
        client.close()
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_an_added_and_a_removed_channel(tmp_path):
    """A removed channel takes nothing more, an added one takes its messages, the others go on."""
    engine = start_engine(config(tmp_path, text(channel("adt", "ADT"), channel("lab", "ORU"))))
    try:
        assert (yield in_thread(codes, port_of(engine), ADT, ORU, SIU)) == ["AA", "AA", "AR"]
        report = yield engine.reload(config(tmp_path, text(channel("adt", "ADT"), channel("sched", "SIU"))))
        assert str(report) == "channel lab removed; channel sched added"
        assert (yield in_thread(codes, port_of(engine), ADT, ORU, SIU)) == ["AA", "AR", "AA"]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_changed_listener_restarts_and_closes_its_connections(tmp_path):
    """A listener whose own settings change is restarted: its old connections close, the new one answers."""
    engine = start_engine(config(tmp_path, text(channel("adt", "ADT"))))
    client = MLLPClient("127.0.0.1", port_of(engine), timeout=20)
    try:
        assert (yield in_thread(request, client, ADT)) == "AA"
        report = yield engine.reload(config(tmp_path, text(channel("adt", "ADT"), idle=60)))
        assert str(report) == "listener main restarted"
        with pytest.raises(OSError):
            yield in_thread(request, client, ADT)
        assert (yield in_thread(codes, port_of(engine), ADT)) == ["AA"]
    finally:
        client.close()
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_an_added_and_a_removed_listener(tmp_path):
    """A removed listener's port refuses connections; an added one answers for its channels."""
    before = text(channel("adt", "ADT"), channel("lab", "ORU", source="lab"), listeners=listener("lab"))
    engine = start_engine(config(tmp_path, before))
    try:
        lab_port = port_of(engine, "lab")
        assert (yield in_thread(codes, lab_port, ORU)) == ["AA"]
        after = text(
            channel("adt", "ADT"), channel("lab", "ORU", source="results"), listeners=listener("results")
        )
        report = yield engine.reload(config(tmp_path, after))
        assert str(report) == "channel lab changed; listener lab removed; listener results added"
        with pytest.raises(ConnectionRefusedError):
            yield in_thread(codes, lab_port, ORU)
        assert (yield in_thread(codes, port_of(engine, "results"), ORU, ADT)) == ["AA", "AR"]
        assert (yield in_thread(codes, port_of(engine), ADT, ORU)) == ["AA", "AR"]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_changed_engine_settings_wait_for_a_restart(tmp_path):
    """Engine settings are not applied by a reload: the report says a restart is needed."""
    engine = start_engine(config(tmp_path, text(channel("adt", "ADT"))))
    try:
        report = yield engine.reload(config(tmp_path, text(channel("adt", "ADT"), application="HUB2")))
        assert str(report) == (
            "no change; needs a restart:"
            " engine settings (store, identity, charset) are applied at the next start"
        )
        assert (yield in_thread(codes, port_of(engine), ADT)) == ["AA"]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_config_with_problems_is_refused_and_the_old_one_keeps_running(tmp_path):
    """reload_from_file fails with every problem of the file; nothing changes, a connection goes on."""
    path = tmp_path / "channels.yaml"
    good = textwrap.dedent(text(channel("adt", "ADT"))).format(data_dir=tmp_path / "data")
    path.write_text(good)
    engine = start_engine(load_config(path))
    client = MLLPClient("127.0.0.1", port_of(engine), timeout=20)
    try:
        port = port_of(engine)
        path.write_text(
            good.replace("types: [ADT]", "types: [ADT, ORU]\n    colour: red").replace("main\n", "mian\n", 1)
        )
        with pytest.raises(ConfigError) as refused:
            yield engine.reload_from_file(path)
        assert [(p.path, p.line, p.message) for p in refused.value.problems] == [
            ("channels[0].source", 13, "no listener named 'main'; known: mian"),
            ("channels[0].colour", 16, "unknown key 'colour'"),
        ]
        assert port_of(engine) == port
        assert (yield in_thread(request, client, ORU)) == "AR"
        assert (yield in_thread(request, client, ADT)) == "AA"
        path.write_text(good)
        report = yield engine.reload_from_file(path)
        assert str(report) == "no change"
    finally:
        client.close()
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_the_engine_prunes_on_its_schedule_and_a_reload_changes_the_days(tmp_path):
    """The engine prunes every prune_every_seconds by channels.yaml; a reloaded retention_days applies."""
    yaml = text(channel("adt", "ADT"), channel("lab", "ORU")).replace(
        "  data_dir: {data_dir}\n", "  data_dir: {data_dir}\n  store: {{prune_every_seconds: 0.05}}\n"
    )
    with_days = yaml.replace("types: [ADT]\n", "types: [ADT]\n    retention_days: 5\n")
    engine = start_engine(config(tmp_path, with_days))
    try:
        old = datetime.now(UTC) - timedelta(days=10)
        ids = yield engine.store.add(
            [
                pms_message(n, channel=name, status=Status.SENT, received_at=old)
                for n, name in ((1, "adt"), (2, "lab"))
            ]
        )
        yield _until_pruned(engine, ids[0])
        assert (yield engine.store.get(ids[1])).pruned_at is None  # lab keeps its content forever

        yield engine.reload(
            config(tmp_path, with_days.replace("types: [ORU]\n", "types: [ORU]\n    retention_days: 9\n"))
        )
        yield _until_pruned(engine, ids[1])
    finally:
        yield engine.stopService()


def written(tmp_path, yaml: str):
    """channels.yaml with ``yaml`` (its data under tmp_path) written in tmp_path; returns its path."""
    path = tmp_path / "channels.yaml"
    path.write_text(textwrap.dedent(yaml).format(data_dir=tmp_path / "data"))
    return path


def closed_unanswered(port: int, data: bytes) -> bytes:
    """Connect, send ``data``, and read until the engine closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed before it could be sent
        return read_until_closed(sock)


@pytest_twisted.inlineCallbacks
def test_a_listeners_transport_settings_guard_its_connections(tmp_path):
    """allowed_networks, max_connections and frame_timeout_seconds in the file guard the running listener."""
    extra = (
        listener("lan")
        + "    allowed_networks: [10.0.0.0/8]\n"
        + listener("one")
        + "    max_connections: 1\n    frame_timeout_seconds: 0.3\n"
    )
    engine = start_engine(config(tmp_path, text(channel("one-adt", "ADT", source="one"), listeners=extra)))
    try:
        assert (yield in_thread(closed_unanswered, port_of(engine, "lan"), frame(ADT))) == b""
        with MLLPClient("127.0.0.1", port_of(engine, "one"), timeout=20) as client:
            assert (yield in_thread(request, client, ADT)) == "AA"
            assert (yield in_thread(closed_unanswered, port_of(engine, "one"), frame(ADT))) == b""
        started = time.monotonic()
        assert (yield in_thread(closed_unanswered, port_of(engine, "one"), frame(ADT)[:20])) == b""
        assert time.monotonic() - started < 5  # the frame timeout, not the 300 s idle timeout
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_the_config_history_holds_no_password_hash(tmp_path):
    """The config recorded at start (its file, or its JSON without one) has every user's hash redacted."""
    secret = hash_password("s3cret", iterations=1000)
    yaml = text(channel("adt", "ADT")).replace(
        "engine:\n",
        f'engine:\n  http:\n    endpoint: "tcp:0:interface=127.0.0.1"\n    users:\n      alice: "{secret}"\n',
        1,
    )
    path = tmp_path / "channels.yaml"
    path.write_text(yaml.replace("{data_dir}", str(tmp_path / "data")), encoding="utf-8")
    for loaded in (load_config(path), config(tmp_path / "memory", yaml)):
        engine = start_engine(loaded)
        try:
            yield wait_until(engine.store.config_history)
            [recorded] = yield engine.store.config_history()
        finally:
            yield engine.stopService()
        digest = secret.rsplit("$", 1)[1]
        assert digest not in recorded.content and secret.split("$")[2] not in recorded.content
        assert "alice" in recorded.content and "pbkdf2_sha256$<redacted>" in recorded.content


def transformed(engine, control_id: str) -> defer.Deferred:
    """Fires with the stored message's content after its channel's transforms, None until processed."""
    d = engine.store.search(MessageQuery(control_id=control_id))
    d.addCallback(lambda found: engine.store.get(found[0].id) if found else None)
    d.addCallback(lambda message: message.transformed if message is not None else None)
    return d


@defer.inlineCallbacks
def field_after_transforms(engine, payload: bytes, control_id: str, path: str):
    """Send ``payload`` with MSH-10 ``control_id``; fires with ``path`` of what its channel stored."""
    payload = payload.replace(b"|A1|P|", f"|{control_id}|P|".encode())
    assert (yield in_thread(codes, port_of(engine), payload)) == ["AA"]
    content = yield wait_until(lambda: transformed(engine, control_id))
    return Message.parse(content.decode()).get(path)


MAPPED = (
    channel("adt", "ADT") + "    transforms:\n      - map:\n          field: MSH-4\n          table: sites\n"
)


SITES = "tables:\n  sites:\n    csv: sites.csv\n    key: code\n    value: site\n"


@pytest_twisted.inlineCallbacks
def test_a_reload_applies_an_edited_table_file(tmp_path):
    """An edited CSV table is a change: its channel is rebuilt and maps with the new entries.

    The config history keeps the table file's hash; the same file again is no change.
    """
    (tmp_path / "sites.csv").write_text("code,site\nNORTH,N-OLD\n")
    path = written(tmp_path, text(MAPPED) + SITES)
    engine = start_engine(load_config(path))
    try:
        assert (yield field_after_transforms(engine, ADT, "T1", "MSH-4")) == "N-OLD"
        (tmp_path / "sites.csv").write_text("code,site\nNORTH,N-NEW\n")
        report = yield engine.reload_from_file(path)
        assert str(report) == "table sites changed; channel adt changed"
        assert (yield field_after_transforms(engine, ADT, "T2", "MSH-4")) == "N-NEW"
        [latest, *_] = yield engine.store.config_history()
        digest = hashlib.sha256(b"code,site\nNORTH,N-NEW\n").hexdigest()
        assert latest.inputs == [
            {"kind": "table", "name": "sites", "path": str(tmp_path / "sites.csv"), "sha256": digest}
        ]
        assert str((yield engine.reload_from_file(path))) == "no change"
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_a_reload_applies_an_edited_python_module(tmp_path, monkeypatch):
    """An edited python: module is a change: run again from its file, its channel calls the new code.

    The edit keeps the file's size, so bytecode cached for the old text cannot stand in for the new.
    """
    module = tmp_path / "reload_hatch_module.py"
    code = 'def mark(message):\n    message.set("MSH-8", "{}")\n    return message\n'
    module.write_text(code.format("OLD"))
    monkeypatch.syspath_prepend(str(tmp_path))
    hatch = channel("adt", "ADT") + "    transforms:\n      - python: reload_hatch_module:mark\n"
    path = written(tmp_path, text(hatch, channel("other", "ORU")))
    engine = start_engine(load_config(path))
    try:
        assert (yield field_after_transforms(engine, ADT, "P1", "MSH-8")) == "OLD"
        module.write_text(code.format("NEW"))
        report = yield engine.reload_from_file(path)
        assert str(report) == "module reload_hatch_module changed; channel adt changed"
        assert (yield field_after_transforms(engine, ADT, "P2", "MSH-8")) == "NEW"
        [latest, *_] = yield engine.store.config_history()
        assert [(i["kind"], i["name"], i["sha256"]) for i in latest.inputs] == [
            ("module", "reload_hatch_module", hashlib.sha256(code.format("NEW").encode()).hexdigest())
        ]
    finally:
        yield engine.stopService()


@defer.inlineCallbacks
def _until_pruned(engine, message_id: int):
    """Wait (10 s at most) until the message's content is pruned."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (yield engine.store.get(message_id)).pruned_at is not None:
            return
        yield later(0.05, lambda: None)
    raise AssertionError(f"message {message_id} was not pruned")


@pytest_twisted.inlineCallbacks
def test_an_engine_given_wake_ups_tells_its_peers_of_the_work_it_leaves(tmp_path):
    """With ``wakeups``, the engine listens while it runs and its channels send their keys to the peers.

    A message processed at intake leaves a delivery in its queue: ``queue:<channel>/<destination>``.
    """
    heard: list[str] = []
    peers: list[tuple[str, int]] = []
    peer = Wakeups(reactor=reactor, peers=lambda: peers)
    peer.start()
    peer.subscribe("", heard.append)
    engine_wakeups = Wakeups(reactor=reactor, peers=lambda: [("127.0.0.1", peer.port)])
    archive = (
        "    destinations:\n      - name: archive\n        type: file\n"
        f"        directory: {tmp_path / 'archive'}\n        filename: '{{{{control_id}}}}.hl7'\n"
    )
    engine = Engine(config(tmp_path, text(channel("adt", "ADT") + archive)), reactor, wakeups=engine_wakeups)
    engine.startService()
    try:
        peers.append(("127.0.0.1", engine_wakeups.port))
        assert (yield in_thread(codes, port_of(engine), ADT)) == ["AA"]
        yield wait_until(lambda: "queue:adt/archive" in heard, seconds=5, step=0.01)
    finally:
        yield engine.stopService()
        yield peer.stop()
    assert engine_wakeups.transport is None  # stopped with the engine


@pytest_twisted.inlineCallbacks
def test_a_message_received_over_mllp_is_found_by_its_content_shortly_after(tmp_path):
    """The engine's jobs include the content index: a patient's name finds the message within seconds."""
    engine = start_engine(make_config(tmp_path))
    client = MLLPClient("127.0.0.1", port_of(engine), timeout=20)
    try:
        message = (
            b"MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101||ADT^A01|Q1|P|2.5\rPID|1||77^^^PMS^MR||QUIXOTL^ZED\r"
        )
        assert (yield in_thread(request, client, message)) == "AA"
        assert engine.indexer is not None

        @defer.inlineCallbacks
        def found():
            return [m.control_id for m in (yield engine.store.search(MessageQuery(text="quixotl zed")))] == [
                "Q1"
            ]

        yield wait_until(found, seconds=15)
    finally:
        client.close()
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_readyz_says_ready_while_every_listener_is_bound_and_healthz_alive(tmp_path):
    """/readyz answers 200 with the listener bound and the store up, 503 naming a listener that stopped.

    /healthz stays 200 (the process is alive) either way.
    """
    body = BASIC_CONFIG.replace(
        "engine:\n", 'engine:\n  http:\n    endpoint: "tcp:0:interface=127.0.0.1"\n    users: {{}}\n', 1
    )
    engine = start_engine(make_config(tmp_path, text=body))
    try:
        url = f"http://127.0.0.1:{engine.web.port}"
        ready = yield in_thread(fetch, f"{url}/readyz")
        assert (ready.status, ready.json()) == (200, {"status": "ready"})
        yield engine.listeners["main"].stopService()
        unready = yield in_thread(fetch, f"{url}/readyz")
        assert (unready.status, unready.json()) == (
            503,
            {"status": "not ready", "reason": "listeners not bound: main"},
        )
        alive = yield in_thread(fetch, f"{url}/healthz")
        assert (alive.status, alive.json()) == (200, {"status": "alive"})
    finally:
        yield engine.stopService()
