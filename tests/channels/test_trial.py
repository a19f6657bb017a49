"""engine.channels.trial: what a channel would make of a message, found without storing or sending it."""

from __future__ import annotations

from engine.channels.trial import try_message
from tests.fakes.config import parse

CONFIG = """
engine: {data_dir: data}
listeners:
  - {name: pms, endpoint: "tcp:21300:interface=127.0.0.1", processing_ids: [P, T]}
tables:
  wards: {inline: {"4N": NORTH-4}}
channels:
  - name: dft
    source: pms
    accept: {types: ["DFT"]}
  - name: adt
    source: pms
    accept: {types: ["ADT"], senders: [{application: PMS}]}
    filters:
      - {field: MSH-11, in: [P]}
    transforms:
      - set: {field: MSH-5, value: EMR}
      - map: {field: PV1-3.1, table: wards}
    destinations:
      - {name: emr, type: file, directory: out/emr}
      - name: audit
        type: file
        directory: out/audit
        filters: [{field: PID-8, equals: F}]
        transforms: [{add_segment: {segment: "ZAU|1|seen"}}]
"""


def adt(sender="PMS", processing="P", ward="4N", sex="F", code="ADT^A04") -> bytes:
    return (
        f"MSH|^~\\&|{sender}|CLINIC|HUB|HUB|20261201||{code}|C1|{processing}|2.5.1\r"
        f"PID|1||111^^^PMS^MR||DOE^JANE||19800101|{sex}\r"
        f"PV1|1|O|{ward}^12^1\r"
    ).encode()


def test_accepted_message_shows_each_destinations_changes():
    """An accepted message lists per destination the fields its output changes, with their names."""
    trial = try_message(parse(CONFIG), "adt", adt())
    assert (trial.outcome, trial.control_id, trial.message_type) == ("accepted", "C1", "ADT^A04")
    emr, audit = trial.destinations
    expected = [("MSH-5", "HUB", "EMR"), ("PV1-3.1", "4N", "NORTH-4")]
    assert [(c.path, c.old, c.new) for c in emr.changes] == expected
    assert emr.changes[1].name == "Assigned Patient Location / Point Of Care"
    assert audit.changes[-1].path == "ZAU" and audit.changes[-1].kind == "added"
    assert "MSH|^~\\&|PMS|CLINIC|EMR|" in emr.output


def test_channel_filter_names_the_filter_and_why():
    """A message the channel's filter drops is 'filtered', with the filter's YAML path and reason."""
    trial = try_message(parse(CONFIG), "adt", adt(processing="T"))
    assert trial.outcome == "filtered"
    assert trial.reason.startswith("channels[1].filters[0]: ")
    assert "'T'" in trial.reason


def test_destination_filter_is_reported_for_that_destination_only():
    """A destination's own filter drops the message for it alone; the others still get theirs."""
    trial = try_message(parse(CONFIG), "adt", adt(sex="M"))
    assert trial.outcome == "accepted"
    emr, audit = trial.destinations
    assert emr.outcome == "queued"
    assert (audit.outcome, audit.output) == ("filtered", None)
    assert audit.reason.startswith("channels[1].destinations[1].filters[0]: ")


def test_failing_transform_is_reported_with_its_error():
    """A transform that fails (a ward missing from a table with on_miss: error) makes the message 'failed'."""
    trial = try_message(parse(CONFIG), "adt", adt(ward="9X"))
    assert trial.outcome == "failed"
    assert "9X" in trial.reason


def test_other_sender_is_not_accepted():
    """A sender no channel accepts: 'not accepted', with the ERR of the AR the listener would answer."""
    trial = try_message(parse(CONFIG), "adt", adt(sender="LAB"))
    assert trial.outcome == "not accepted"
    assert trial.reason == "200 no channel on listener 'pms' accepts 'ADT^A04' from 'LAB'"


def test_message_an_earlier_channel_takes_is_not_accepted():
    """A message the listener gives to an earlier channel is not accepted by the one tried."""
    trial = try_message(parse(CONFIG), "adt", adt(code="DFT^P03"))
    assert trial.outcome == "not accepted"
    assert "channel 'dft'" in trial.reason


def test_header_the_listener_refuses_is_not_accepted():
    """A processing id the listener refuses: 'not accepted' with the ERR code and text of its AR."""
    trial = try_message(parse(CONFIG), "adt", adt(processing="D"))
    assert trial.outcome == "not accepted"
    assert trial.reason.startswith("202 processing id 'D' not accepted")


def test_unreadable_message_is_not_accepted():
    """Bytes without an MSH are not accepted, with the reason."""
    trial = try_message(parse(CONFIG), "adt", b"PID|1||111\r")
    assert trial.outcome == "not accepted"
    assert "MSH" in trial.reason
