"""v2.xml both ways: standard element names, groups, Z segments, escapes, and the corpus round trip."""

from __future__ import annotations

import pytest
from lxml import etree

from engine.errors import HL7Error
from engine.hl7.batch import looks_like_batch, split_batch
from engine.hl7.charset import decode
from engine.hl7.header import read_header
from engine.hl7.message import HEADER_SEGMENTS, split_segments, unescape
from engine.hl7.xml import NAMESPACE, from_element, from_xml, to_element, to_xml
from tests.fakes.corpus import corpus_entries

NS = {"v": NAMESPACE}
ORU = (
    "MSH|^~\\&|LAB|CLINIC|HUB|TEST|20260101120000||ORU^R01^ORU_R01|C1|P|2.5.1\r"
    "PID|1||P1^^^PMS^MR||DOE^JOHN\r"
    "ZPI|1|custom^value\r"
    "OBR|1|||CBC^Blood count\r"
    "OBX|1|NM|WBC||7.1|10*3/uL\r"
    "OBX|2|ST|NOTE||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\.br\\g\\X0D0A\\h\\H\\bold\\N\\\r"
)


def test_elements_are_named_the_standard_way_with_groups():
    """ORU_R01 root, PATIENT_RESULT/PATIENT groups, PID.5/XPN.1/FN.1, OBX in ORDER_OBSERVATION/OBSERVATION."""
    root = to_element(ORU)
    assert etree.QName(root).namespace == NAMESPACE and etree.QName(root).localname == "ORU_R01"
    family = root.xpath(
        "/v:ORU_R01/v:ORU_R01.PATIENT_RESULT/v:ORU_R01.PATIENT/v:PID/v:PID.5/v:XPN.1/v:FN.1/text()",
        namespaces=NS,
    )
    assert family == ["DOE"]
    values = root.xpath(
        "//v:ORU_R01.ORDER_OBSERVATION/v:ORU_R01.OBSERVATION/v:OBX/v:OBX.5/text()", namespaces=NS
    )
    assert values[0] == "7.1"
    assert root.xpath("//v:OBR/v:OBR.4/v:CE.2/text()", namespaces=NS) == ["Blood count"]


def test_z_segments_stay_where_they_were_with_their_components():
    """ZPI follows PID inside the PATIENT group; its unknown field's components are ZPI.2.1, ZPI.2.2."""
    root = to_element(ORU)
    [zpi] = root.xpath("//v:ORU_R01.PATIENT/v:ZPI", namespaces=NS)
    assert etree.QName(zpi.getprevious()).localname == "PID"
    assert zpi.xpath("v:ZPI.2/v:ZPI.2.2/text()", namespaces=NS) == ["value"]


def test_escapes_become_characters_or_escape_elements_and_come_back():
    """Delimiter escapes are characters; \\.br\\, \\X0D0A\\, \\H\\ are <escape V>; ER7 is unchanged."""
    root = to_element(ORU)
    [value] = root.xpath("//v:OBX[v:OBX.1='2']/v:OBX.5", namespaces=NS)
    assert value.text == "a|b^c&d~e\\f"
    assert [e.get("V") for e in value] == [".br", "X0D0A", "H", "N"]
    assert from_element(root) == ORU.rstrip("\r")


def test_characters_xml_cannot_hold_are_hex_escapes():
    """A VT or NUL inside a value becomes <escape V="X0B"/>, and \\X0B\\ in ER7."""
    text = ORU.replace("DOE^JOHN", "DO\x0bE^JO\x00HN")
    back = from_xml(to_xml(text))
    assert "DO\\X0B\\E^JO\\X00\\HN" in back


def test_xml_that_is_no_v2_message_is_an_hl7_error():
    """Not well-formed, or without an MSH first: HL7Error, nothing guessed; entities are not expanded."""
    with pytest.raises(HL7Error):
        from_xml(b"<ORU_R01")
    with pytest.raises(HL7Error):
        from_xml(b'<ORU_R01 xmlns="urn:hl7-org:v2xml"><PID/></ORU_R01>')
    doc = (
        b'<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<ADT_A01 xmlns="urn:hl7-org:v2xml"><MSH><MSH.1>|</MSH.1><MSH.2>^~\\&amp;</MSH.2>'
        b"<MSH.10>&x;</MSH.10></MSH></ADT_A01>"
    )
    assert "root:" not in from_xml(doc)


def normalised(text: str) -> list:
    """ER7 content with the differences docs/hl7.md allows taken out.

    Segments end at CR; lines of only blanks or control characters are dropped; trailing empty
    fields, repetitions, components and subcomponents are dropped; leaf values are compared
    unescaped (so \\X0B\\ and a raw VT are the same value, as are a lone escape character and \\E\\).
    """
    d = read_header(text).delimiters
    blank = "".join(map(chr, range(33)))
    result = []
    for segment in split_segments(text.lstrip()):
        if not segment.strip(blank):
            continue
        if segment[:3] in HEADER_SEGMENTS:
            head, rest = (
                [segment[:3], segment[3], segment[4:].split(d.field, 1)[0]],
                segment[4:].split(d.field)[1:],
            )
        else:
            fields = segment.split(d.field)
            head, rest = fields[:1], fields[1:]
        result.append(
            (
                head,
                _trim(
                    [
                        _trim(
                            [
                                _trim(
                                    [
                                        _trim(
                                            [
                                                unescape(s, d)
                                                for s in (c.split(d.subcomponent) if d.subcomponent else [c])
                                            ]
                                        )
                                        for c in r.split(d.component)
                                    ]
                                )
                                for r in f.split(d.repetition)
                            ]
                        )
                        for f in rest
                    ]
                ),
            )
        )
    return result


def _trim(items: list) -> list:
    while items and not items[-1]:
        items.pop()
    return items


def corpus_messages():
    for entry in corpus_entries():
        text = decode(entry.path.read_bytes(), "utf-8").text
        members = [text]
        if looks_like_batch(text):
            try:
                members = list(split_batch(text).messages)
            except HL7Error:
                pass
        for index, member in enumerate(members, start=1):
            yield f"{entry.file}#{index}", member


def test_every_parseable_corpus_message_round_trips_er7_xml_er7():
    """Each corpus message with a readable header and segment IDs comes back from v2.xml the same."""
    converted, refused, differ = 0, [], []
    for name, text in corpus_messages():
        try:
            document = to_xml(text)
        except HL7Error as error:
            refused.append((name, str(error)))
            continue
        converted += 1
        if normalised(from_xml(document)) != normalised(text):
            differ.append(name)
    assert differ == []
    # What has no v2.xml form: an unreadable MSH, or a line that is no segment (no segment ID).
    assert all("MSH" in reason or "no segment ID" in reason for _, reason in refused), refused
    assert converted >= 170
