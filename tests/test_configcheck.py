"""engine.configcheck: the warnings `hl7engine check` prints about a valid but likely mistaken config."""

from __future__ import annotations

import subprocess

from engine.configcheck import config_warnings
from tests.fakes.config import parse
from tests.fakes.process import ENGINE

LISTENERS = """
engine: {data_dir: data, default_version: "2.5.1"}
listeners:
  - {name: pms, endpoint: "tcp:21310:interface=127.0.0.1"}
  - {name: lab, endpoint: "tcp:21311:interface=127.0.0.1"}
"""


def warnings(channels: str, tables: str = "") -> list[str]:
    return [str(w) for w in config_warnings(parse(LISTENERS + tables + channels))]


def test_clean_config_has_no_warnings():
    """A channel whose paths exist in its structures, fed by its listener, sending elsewhere: no warning."""
    assert (
        warnings("""
channels:
  - name: adt
    source: pms
    accept: {types: ["ADT^A04"]}
    filters: [{field: PV1-3.1, equals: "4N"}]
    transforms: [{copy: {from: PID-3.1, to: ZPI-1}}]
    destinations: [{name: emr, type: mllp, host: 127.0.0.1, port: 21399}]
""")
        == []
    )


def test_segment_the_structure_lacks_is_warned_at_its_path():
    """An OBX filter on an SIU channel: the SIU structures have OBX, but not OBR; OBR is warned."""
    assert warnings("""
channels:
  - name: siu
    source: pms
    accept: {types: ["SIU^S1?"]}
    filters: [{any: [{field: OBX-5, exists: true}, {field: OBR-4.1, equals: X}]}]
""") == [
        "warning: channels[0].filters[0].any[1].field: OBR-4.1: SIU^S1? messages (HL7 2.5.1)"
        " have no OBR segment"
    ]


def test_field_past_the_segments_end_is_warned():
    """PID-40 in 2.5.1 (PID has 39 fields) is warned, in a destination's transform too."""
    found = warnings("""
channels:
  - name: adt
    source: pms
    accept: {types: ["ADT"]}
    destinations:
      - name: out
        type: file
        directory: out
        transforms: [{set: {field: PID-40, value: x}}]
""")
    assert found == [
        "warning: channels[0].destinations[0].transforms[0].set.field: PID-40:"
        " PID has 39 fields in HL7 2.5.1; past its end"
    ]


def test_segments_the_channel_adds_and_any_type_are_not_judged():
    """A segment added by add_segment, and any segment on a '*' channel, give no warning."""
    assert (
        warnings("""
channels:
  - name: adt
    source: pms
    accept: {types: ["ADT^A04"]}
    transforms:
      - {add_segment: {segment: "OBR|1"}}
      - {set: {field: OBR-4, value: x}}
  - name: all
    source: pms
    accept: {types: ["*"]}
    filters: [{field: RXA-5, exists: true}]
""")
        == []
    )


def test_unused_table_is_warned():
    """A table no map transform uses is warned at tables.<name>."""
    found = warnings(
        """
channels:
  - {name: adt, source: pms, accept: {types: ["ADT"]}}
""",
        tables="tables:\n  wards: {inline: {A: B}}\n",
    )
    assert found == ["warning: tables.wards: no map transform uses this table"]


def test_missing_table_file_is_an_error_naming_the_table(tmp_path):
    """A CSV table whose file is missing is more than a warning: an error at tables.<name>.csv."""
    config = tmp_path / "channels.yaml"
    config.write_text(
        LISTENERS
        + "tables:\n  wards: {csv: wards.csv, key: pms, value: emr}\n"
        + "channels:\n  - name: adt\n    source: pms\n    accept: {types: [ADT]}\n"
        + "    transforms: [{map: {field: PV1-3.1, table: wards}}]\n"
    )
    result = subprocess.run([*ENGINE, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "tables.wards.csv: cannot read" in result.stdout + result.stderr


def test_channel_an_earlier_one_shadows_is_warned():
    """A channel after a catch-all of its listener never gets a message; one fed by a hand-off is fine."""
    found = warnings("""
channels:
  - {name: pms-all, source: pms, accept: {types: ["*"]}}
  - {name: pms-adt, source: pms, accept: {types: ["ADT"], senders: [{application: PMS}]}}
  - name: lab-oru
    source: lab
    accept: {types: ["ORU^R01"], senders: [{application: LAB}]}
    destinations: [{name: again, type: channel, channel: lab-late}]
  - {name: lab-late, source: lab, accept: {types: ["ORU^R01"], senders: [{application: LAB}]}}
  - {name: lab-other, source: lab, accept: {types: ["ORU"], senders: [{application: LAB}]}}
""")
    assert found == [
        "warning: channels[1].accept: listener 'pms' gives every message this channel accepts to 'pms-all',"
        " an earlier channel: this one never gets any"
    ]


def test_destination_to_our_own_listener_port_is_warned():
    """An MLLP destination to localhost on a listener's port, and an HTTP one to 127.0.0.1, are warned."""
    found = warnings("""
channels:
  - name: adt
    source: pms
    accept: {types: ["ADT"]}
    destinations:
      - {name: loop, type: mllp, host: localhost, port: 21311}
      - {name: web, type: http, url: "http://127.0.0.1:21310/hl7"}
      - {name: remote, type: mllp, host: emr.example.org, port: 21311}
""")
    assert found == [
        "warning: channels[0].destinations[0].port: localhost:21311 is listener 'lab' of this engine:"
        " the messages come back in",
        "warning: channels[0].destinations[1].url: 127.0.0.1:21310 is listener 'pms' of this engine:"
        " the messages come back in",
    ]


def test_check_prints_warnings_and_exits_zero(tmp_path):
    """`hl7engine check` prints each warning as 'warning: <path>: <text>' and still exits 0."""
    config = tmp_path / "channels.yaml"
    config.write_text(LISTENERS + "tables:\n  wards: {inline: {A: B}}\nchannels:\n"
                      "  - {name: adt, source: pms, accept: {types: [ADT]}}\n")  # fmt: skip
    result = subprocess.run([*ENGINE, "check", "-c", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert result.stderr.splitlines() == ["warning: tables.wards: no map transform uses this table"]
