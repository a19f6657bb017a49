"""The file destination: atomic writes, file name templates, on_exists, batch files, write failures."""

from __future__ import annotations

import json
import os
from datetime import datetime

import pytest
import pytest_twisted
from fhir.resources.R4B.bundle import Bundle
from twisted.internet import reactor

from engine.channels.destinations import file as file_module
from engine.channels.destinations.file import TEMP_PREFIX, FileDestination
from engine.channels.destinations.spec import FileSettings
from engine.hl7.batch import split_batch
from engine.model import Delivery, Outcome
from tests.fakes import outbound
from tests.fakes.channels import journal_lines
from tests.fakes.outbound import message

SENT, RETRY, ERROR = Outcome.SENT, Outcome.RETRY, Outcome.ERROR
NOW = datetime(2026, 3, 4, 5, 6, 7).timestamp()  # local time, like the {now} placeholder


class FixedClock:
    """The test reactor, except that its clock stands still at ``seconds``."""

    def __init__(self, seconds: float):
        self._seconds = seconds

    def seconds(self) -> float:
        return self._seconds

    def __getattr__(self, name):
        return getattr(reactor, name)


def delivery(n: int, **fields) -> Delivery:
    """Test message n's delivery to the archive (delivery id 100 + n); ``fields`` replace any field."""
    return outbound.delivery(n, delivery_id=100 + n, destination="archive", **fields)


def destination(directory, **settings) -> FileDestination:
    return FileDestination("archive", FileSettings(directory=directory, **settings), reactor=FixedClock(NOW))


def files(directory) -> list[str]:
    return sorted(os.listdir(directory))


@pytest_twisted.inlineCallbacks
def test_a_message_becomes_one_file_with_cr_segments(tmp_path):
    """Each message is one file named by the default template; segments end with CR, the last one too."""
    result = yield destination(tmp_path).send(delivery(1, payload=message(1).rstrip(b"\r")))
    assert (result.outcome, result.reason) == (SENT, str(tmp_path / "adt_1.hl7"))
    assert files(tmp_path) == ["adt_1.hl7"]
    assert (tmp_path / "adt_1.hl7").read_bytes() == message(1)


@pytest_twisted.inlineCallbacks
def test_every_placeholder_is_filled(tmp_path):
    """channel, destination, message_id, delivery_id, control_id, message_type and now all reach the name."""
    template = (
        "{channel}.{destination}.{message_id:04d}.{delivery_id}.{control_id}.{message_type}"
        ".{now:%Y%m%d%H%M%S}.hl7"
    )
    result = yield destination(tmp_path, filename=template).send(delivery(7))
    assert result.outcome == SENT
    assert files(tmp_path) == ["adt.archive.0007.107.MSG-7.ADT_A01.20260304050607.hl7"]


@pytest_twisted.inlineCallbacks
def test_values_from_the_message_cannot_leave_the_folder(tmp_path):
    """A control id with slashes or dots is reduced to safe characters: the file stays in its folder."""
    target = tmp_path / "out"
    result = yield destination(target, filename="msg_{control_id}.hl7").send(
        delivery(1, control_id="../../etc/x y")
    )
    assert result.outcome == SENT
    assert files(target) == ["msg_.._.._etc_x_y.hl7"]
    assert files(tmp_path) == ["out"]


@pytest_twisted.inlineCallbacks
def test_a_template_giving_no_usable_name_is_an_error(tmp_path):
    """A name that comes out empty or hidden (here from an empty control id) is ERROR; nothing is written."""
    target = destination(tmp_path, filename="{control_id}")
    empty = yield target.send(delivery(1, control_id=""))
    hidden = yield target.send(delivery(2, control_id=".x"))
    assert (empty.outcome, hidden.outcome) == (ERROR, ERROR)
    assert files(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_on_exists_unique_numbers_the_new_file(tmp_path):
    """With on_exists: unique (the default) a taken name gets -1, -2... before its extension.

    Nothing is replaced.
    """
    target = destination(tmp_path, filename="{channel}.hl7")
    results = []
    for n in (1, 2, 3):
        results.append((yield target.send(delivery(n))))
    assert [r.reason for r in results] == [
        str(tmp_path / name) for name in ("adt.hl7", "adt-1.hl7", "adt-2.hl7")
    ]
    assert (tmp_path / "adt.hl7").read_bytes() == message(1)
    assert (tmp_path / "adt-2.hl7").read_bytes() == message(3)


@pytest_twisted.inlineCallbacks
def test_on_exists_overwrite_replaces_the_file(tmp_path):
    """With on_exists: overwrite the newer message replaces the file of the same name."""
    target = destination(tmp_path, filename="{channel}.hl7", on_exists="overwrite")
    for n in (1, 2):
        assert (yield target.send(delivery(n))).outcome == SENT
    assert files(tmp_path) == ["adt.hl7"]
    assert (tmp_path / "adt.hl7").read_bytes() == message(2)


@pytest_twisted.inlineCallbacks
def test_on_exists_error_keeps_the_old_file_and_reports_error(tmp_path):
    """With on_exists: error a taken name is ERROR.

    The existing file is untouched and no temporary file is left.
    """
    target = destination(tmp_path, filename="{channel}.hl7", on_exists="error")
    first = yield target.send(delivery(1))
    second = yield target.send(delivery(2))
    assert (first.outcome, second.outcome) == (SENT, ERROR)
    assert "exists" in second.reason
    assert files(tmp_path) == ["adt.hl7"]
    assert (tmp_path / "adt.hl7").read_bytes() == message(1)


@pytest_twisted.inlineCallbacks
def test_the_file_appears_complete_under_its_final_name(tmp_path, monkeypatch):
    """While the content is flushed only a hidden temporary file exists.

    Afterwards only the complete final file.
    """
    seen: list[list[str]] = []
    real_fsync = os.fsync

    def watching_fsync(descriptor):
        seen.append(files(tmp_path))
        real_fsync(descriptor)

    monkeypatch.setattr(file_module.os, "fsync", watching_fsync)
    payload = message(1) + b"OBX|1|TX|||" + b"x" * 1_000_000 + b"\r"
    result = yield destination(tmp_path).send(delivery(1, payload=payload))
    assert result.outcome == SENT
    during = seen[0]  # the data file's fsync, before it is named
    assert len(during) == 1 and during[0].startswith(TEMP_PREFIX) and during[0].endswith(".tmp")
    assert files(tmp_path) == ["adt_1.hl7"]
    assert (tmp_path / "adt_1.hl7").read_bytes() == payload


@pytest.mark.parametrize(("separator", "expected"), [("lf", b"\n"), ("crlf", b"\r\n"), ("cr", b"\r")])
@pytest_twisted.inlineCallbacks
def test_segment_separator_is_applied(tmp_path, separator, expected):
    """segment_separator lf/crlf/cr rewrites the breaks between segments, whatever the payload used."""
    payload = message(1).replace(b"\r", b"\r\n")
    yield destination(tmp_path, segment_separator=separator).send(delivery(1, payload=payload))
    content = (tmp_path / "adt_1.hl7").read_bytes()
    assert content == b"".join(segment + expected for segment in message(1).split(b"\r") if segment)


@pytest_twisted.inlineCallbacks
def test_a_batch_is_one_file_with_an_envelope_holding_every_message(tmp_path):
    """send_run with batch: true writes one FHS/BHS...BTS/FTS file with all N messages.

    Each delivery gets its path.
    """
    target = destination(tmp_path, batch=True)
    results = yield target.send_run([delivery(n) for n in (1, 2, 3)], stop_at_failure=True)
    name = "adt_20260304050607.hl7"
    assert [(r.outcome, r.reason) for r in results] == [(SENT, str(tmp_path / name))] * 3
    text = (tmp_path / name).read_bytes().decode()
    lines = text.split("\r")
    assert lines[0].startswith("FHS|^~\\&|") and lines[1].startswith("BHS|^~\\&|")
    assert lines[-3:] == ["BTS|3", "FTS|1", ""]
    batch = split_batch(text)
    assert batch.messages == tuple(message(n).decode().rstrip("\r") for n in (1, 2, 3))
    assert (batch.declared_count, batch.batch_control_id) == (3, "101")


@pytest_twisted.inlineCallbacks
def test_a_batch_file_is_what_is_in_flight_every_message_journalled_before_it(tmp_path, journals):
    """With batch: true every message of the run is noted before the file is written, answered after."""
    journal = journals.journal("adt", "archive")
    journal.open()
    yield destination(tmp_path / "out", batch=True).send_run(
        [delivery(n) for n in (1, 2)], stop_at_failure=True, journal=journal
    )
    lines = journal_lines(journal.path)
    assert [(e[0], e[1]) for e in lines] == [("S", 101), ("S", 102), ("A", 101), ("A", 102)]
    journal.close()


@pytest_twisted.inlineCallbacks
def test_a_single_send_with_batch_set_is_a_one_message_batch_file(tmp_path):
    """With batch: true, send() of one delivery still writes an enveloped batch file (BTS|1)."""
    result = yield destination(tmp_path, batch=True).send(delivery(1))
    assert result.outcome == SENT
    lines = (tmp_path / "adt_20260304050607.hl7").read_bytes().decode().split("\r")
    assert lines[0].startswith("FHS") and "BTS|1" in lines


@pytest_twisted.inlineCallbacks
def test_a_run_without_batch_set_is_one_file_per_message(tmp_path):
    """send_run with batch: false writes each message to its own file, without envelope."""
    results = yield destination(tmp_path).send_run([delivery(1), delivery(2)], stop_at_failure=True)
    assert [r.outcome for r in results] == [SENT, SENT]
    assert (tmp_path / "adt_1.hl7").read_bytes() == message(1)
    assert (tmp_path / "adt_2.hl7").read_bytes() == message(2)


@pytest_twisted.inlineCallbacks
def test_an_unwritable_directory_is_retry(tmp_path):
    """A folder that cannot be created or written is RETRY, not a crash (here: a path through a file)."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = yield destination(tmp_path / "blocker" / "out").send(delivery(1))
    assert result.outcome == RETRY
    assert str(tmp_path / "blocker" / "out") in result.reason


@pytest_twisted.inlineCallbacks
def test_the_folder_is_created_when_missing(tmp_path):
    """A missing target folder (and its parents) is created on the first write."""
    result = yield destination(tmp_path / "a" / "b").send(delivery(1))
    assert result.outcome == SENT
    assert files(tmp_path / "a" / "b") == ["adt_1.hl7"]


@pytest_twisted.inlineCallbacks
def test_an_empty_batch_writes_nothing(tmp_path):
    """send_run of no deliveries writes no file and returns no results."""
    assert (yield destination(tmp_path, batch=True).send_run([], stop_at_failure=True)) == []
    assert files(tmp_path) == []


@pytest_twisted.inlineCallbacks
def test_encoding_fhir_writes_each_message_as_a_transaction_bundle(tmp_path):
    """encoding: fhir: one JSON file per message (default name .json), a valid R4 transaction Bundle."""
    result = yield destination(tmp_path, encoding="fhir", time_zone="Europe/Berlin").send(delivery(1))
    assert (result.outcome, files(tmp_path)) == (SENT, ["adt_1.json"])
    bundle = json.loads((tmp_path / "adt_1.json").read_bytes())
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["name"] == [{"family": "DOE", "given": ["JOHN"]}]


@pytest_twisted.inlineCallbacks
def test_encoding_fhir_of_a_payload_that_is_no_message_is_an_error(tmp_path):
    """What cannot be converted is ERROR and writes nothing."""
    result = yield destination(tmp_path, encoding="fhir").send(delivery(1, payload=b"EVN|A01"))
    assert result.outcome == ERROR
    assert result.reason.startswith("cannot encode the message: ")
    assert files(tmp_path) == []


def test_batch_files_take_er7_only_and_time_zone_needs_fhir():
    """batch: true with encoding: fhir is refused (the envelope is ER7); so is time_zone on ER7."""
    with pytest.raises(
        ValueError, match="batch: true writes an HL7 batch file: it takes encoding: er7, not fhir"
    ):
        FileSettings(directory="out", batch=True, encoding="fhir")
    with pytest.raises(ValueError, match="time_zone: needs encoding: fhir"):
        FileSettings(directory="out", time_zone="Europe/Berlin")


@pytest_twisted.inlineCallbacks
def test_encoding_xml_writes_the_v2_xml_of_the_message(tmp_path):
    """encoding: xml writes each message's v2.xml document (read back, the same message)."""
    from engine.hl7.xml import from_xml

    result = yield destination(tmp_path, encoding="xml", filename="{channel}_{message_id}.xml").send(
        delivery(1)
    )
    assert result.outcome == SENT
    written = (tmp_path / "adt_1.xml").read_bytes()
    assert written.startswith(b"<?xml") and from_xml(written) == message(1).decode().rstrip("\r")


def test_encoding_xml_cannot_go_with_batch_files_and_xslt_needs_xml(tmp_path):
    """batch: true takes encoding: er7; xslt: without encoding: xml is refused."""
    with pytest.raises(ValueError, match="batch: true writes an HL7 batch file"):
        FileSettings(directory=tmp_path, batch=True, encoding="xml")
    stylesheet = '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"/>'
    with pytest.raises(ValueError, match="xslt: needs encoding: xml"):
        FileSettings(directory=tmp_path, xslt={"inline": stylesheet})
