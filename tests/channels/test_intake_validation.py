"""A channel's ``validate`` at intake, on the real engine: strict answers AE, tolerant keeps findings."""

from __future__ import annotations

import pytest_twisted

from engine.listeners.client import MLLPClient
from engine.store.reads import MessageQuery
from tests.fakes.harness import BASIC_CONFIG, in_thread, make_config, port_of, start_engine

VALID = (
    "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ADT^A01^ADT_A01|{id}|P|2.5.1\r"
    "EVN|A01|20260101120000\r"
    "PID|1||P1^^^PMS^MR||DOE^JOHN||{birth}\r"
    "PV1|1|I\r"
)


def config(tmp_path, level: str):
    """The harness's one-channel engine with the channel's ``validate`` set to ``level``."""
    return make_config(tmp_path, text=BASIC_CONFIG + f"    validate: {level}\n")


def request(port: int, text: str) -> str:
    with MLLPClient("127.0.0.1", port, timeout=10) as client:
        return client.request(text.encode()).decode()


def segment(reply: str, name: str) -> list[list[str]]:
    return [s.split("|") for s in reply.split("\r") if s.startswith(name + "|")]


@pytest_twisted.inlineCallbacks
def test_strict_answers_a_valid_message_aa_and_an_invalid_one_ae_with_one_err_per_finding(tmp_path):
    """Strict: AA for a valid message; AE with ERR-2/3/4/8 per finding for a bad one, stored ERROR."""
    engine = start_engine(config(tmp_path, "strict"))
    try:
        port = port_of(engine)
        good = yield in_thread(request, port, VALID.format(id="V-1", birth="19800101"))
        assert segment(good, "MSA")[0][1:3] == ["AA", "V-1"]
        bad = yield in_thread(request, port, VALID.format(id="V-2", birth="1980-01-01"))
        assert segment(bad, "MSA")[0][1:3] == ["AE", "V-2"]
        errs = segment(bad, "ERR")
        assert [(e[2], e[3], e[4]) for e in errs] == [("PID^1^7^1^1", "102^Data type error^HL70357", "E")]
        assert errs[0][8] == "PID-7.1: not a valid DTM value"
        [row] = yield engine.store.search(MessageQuery(control_id="V-2"))
        assert (row.status, row.ack_code, row.channel) == ("ERROR", "AE", "everything")
        stored = yield engine.store.get(row.id)
        assert [e.detail for e in stored.events] == ["validation E 102 PID-7.1: not a valid DTM value"]
        assert "1980-01-01" not in stored.error
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_strict_before_2_5_reports_each_finding_in_err_1(tmp_path):
    """Strict on a v2.3 message: AE with MSA-3 and ERR-1 (segment^sequence^field^code&text&HL70357)."""
    engine = start_engine(config(tmp_path, "strict"))
    try:
        port = port_of(engine)
        text = VALID.format(id="V-3", birth="19800101").replace("|2.5.1\r", "|2.3\r").replace("DOE^JOHN", "")
        reply = yield in_thread(request, port, text.replace("ADT^A01^ADT_A01", "ADT^A01"))
        msa = segment(reply, "MSA")[0]
        assert msa[1:3] == ["AE", "V-3"] and msa[3] == "PID-5: required field missing"
        [err] = segment(reply, "ERR")
        assert err[1] == "PID^1^5^101&Required field missing&HL70357"
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_tolerant_stores_and_processes_the_message_and_keeps_its_findings(tmp_path):
    """Tolerant: an invalid message is answered AA, processed as usual, its findings kept as its events."""
    engine = start_engine(config(tmp_path, "tolerant"))
    try:
        port = port_of(engine)
        text = VALID.format(id="V-4", birth="1980-01-01").replace("PV1|1|I\r", "")
        reply = yield in_thread(request, port, text)
        assert segment(reply, "MSA")[0][1:3] == ["AA", "V-4"]
        assert segment(reply, "ERR") == []
        [row] = yield engine.store.search(MessageQuery(control_id="V-4"))
        assert row.status == "TRANSFORMED"  # the store-only channel: final as stored
        stored = yield engine.store.get(row.id)
        assert [e.detail for e in stored.events] == [
            "validation E 100 PV1: required segment missing (expected before the end)",
            "validation E 102 PID-7.1: not a valid DTM value",
        ]
    finally:
        yield engine.stopService()


@pytest_twisted.inlineCallbacks
def test_validation_runs_off_the_reactor_thread(tmp_path, monkeypatch):
    """Every message of a validating channel is validated on a thread pool thread, never the reactor's."""
    import threading

    from engine.channels import examine

    threads_seen = []

    def watched(text, **kwargs):
        threads_seen.append(threading.current_thread() is threading.main_thread())
        return validate(text, **kwargs)

    validate = examine.validate
    monkeypatch.setattr(examine, "validate", watched)
    engine = start_engine(config(tmp_path, "tolerant"))
    try:
        port = port_of(engine)
        for n in range(3):
            yield in_thread(request, port, VALID.format(id=f"T-{n}", birth="19800101"))
        assert threads_seen == [False, False, False]
    finally:
        yield engine.stopService()
