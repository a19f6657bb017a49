"""v2.xml (namespace ``urn:hl7-org:v2xml``) with lxml, both ways.

``to_element(text)`` turns ER7 text into the v2.xml tree: the root is the message structure
(``ORU_R01``), groups are elements where the version defines them (``ORU_R01.PATIENT_RESULT``,
from hl7apy's structures, engine.hl7.structure), segments hold fields (``PID.5``), a repeated
field is its element repeated, fields of a composite type hold components named by that type
(``XPN.1``) and components subcomponents (``FN.1``). Z segments, unknown segments and fields of
unknown type keep their positions: components are then named after the field (``ZPI.3.1``).
``from_element(root)`` (and ``from_xml``) turns any such tree back into ER7, reading positions
from the number after the last dot of each element name.

Leaf values are unescaped: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` become the characters; every other
escape sequence (``\\.br\\``, ``\\H\\``, ``\\X0D0A\\``) and any character XML 1.0 cannot hold is an
``<escape V="..."/>`` element, written back as it was. What does not survive the round trip is
listed in docs/hl7.md ("v2.xml").
"""

from __future__ import annotations

import re

from lxml import etree

from engine.errors import HL7Error
from engine.hl7.header import read_header
from engine.hl7.message import HEADER_SEGMENTS, Delimiters, Segment, escape, split_segments
from engine.hl7.names import library_version
from engine.hl7.structure import datatype_reference, place, segment_reference, structure_of

__all__ = ["NAMESPACE", "from_element", "from_xml", "to_element", "to_xml"]

NAMESPACE = "urn:hl7-org:v2xml"
_NS = f"{{{NAMESPACE}}}"
_ESCAPE = f"{_NS}escape"
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_BLANK = "".join(map(chr, range(33)))
# Characters XML 1.0 cannot carry in text: written as hex escapes.
_NOT_XML = re.compile("([\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff])")


def to_xml(text: str) -> bytes:
    """ER7 text as a v2.xml document (UTF-8, with an XML declaration)."""
    return etree.tostring(to_element(text), xml_declaration=True, encoding="UTF-8", pretty_print=True)


def to_element(text: str) -> etree._Element:
    """ER7 text as a v2.xml element tree; HL7Error when the header is unreadable or a line is no segment."""
    header = read_header(text)
    d = header.delimiters
    version = library_version(header.version)
    # Lines of only blanks or control characters (a stray MLLP start byte, a space) are no segments: dropped.
    segments = [Segment(raw, d) for raw in split_segments(text.lstrip()) if raw.strip(_BLANK)]
    for number, segment in enumerate(segments, start=1):
        if not _SEGMENT_ID.fullmatch(segment.name):
            raise HL7Error(f"line {number} has no segment ID: it has no v2.xml form", code=100)
    names = [s.name for s in segments]
    tree = structure_of(version, header.message_structure)
    root_name = tree.name if tree is not None else _root_name(header.message_structure)
    root = etree.Element(f"{_NS}{root_name}", nsmap={None: NAMESPACE})
    groups = place(tree, names).groups if tree is not None else [()] * len(segments)
    # Open group elements, outermost first: (group name, occurrence, element).
    open_groups: list[tuple[str, int, etree._Element]] = []
    for segment, path in zip(segments, groups):
        keep = 0
        while keep < min(len(open_groups), len(path)) and open_groups[keep][:2] == path[keep]:
            keep += 1
        del open_groups[keep:]
        for name, occurrence in path[keep:]:
            parent = open_groups[-1][2] if open_groups else root
            open_groups.append((name, occurrence, etree.SubElement(parent, f"{_NS}{name}")))
        parent = open_groups[-1][2] if open_groups else root
        _write_segment(etree.SubElement(parent, f"{_NS}{segment.name}"), segment, version, d)
    return root


def _root_name(structure: str) -> str:
    """The root of a message whose structure hl7apy does not define: its structure when it is a name."""
    return structure if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", structure or "") else "HL7Message"


def _write_segment(element: etree._Element, segment: Segment, version: str, d: Delimiters) -> None:
    reference = segment_reference(version, segment.name) or ()
    fields = segment.fields
    name = segment.name
    varies = _obx_value_type(segment, version) if name == "OBX" else None
    for position in range(1, len(fields)):
        value = fields[position]
        if not value:
            continue
        tag = f"{_NS}{name}.{position}"
        if segment.is_header and position <= 2:  # the delimiters themselves, as written
            etree.SubElement(element, tag).text = value
            continue
        field_reference = reference[position - 1][1] if position <= len(reference) else None
        if varies is not None and position == 5:
            field_reference = varies
        repetitions = value.split(d.repetition)
        while repetitions and not repetitions[-1]:
            repetitions.pop()
        for repetition in repetitions:
            _write_value(
                etree.SubElement(element, tag), repetition, field_reference, f"{name}.{position}", d, 0
            )


def _obx_value_type(segment: Segment, version: str):
    """OBX-5 takes the type OBX-2 names: its reference, as if OBX-5 were declared of that type."""
    data_type = segment.field(2).strip()
    if not re.fullmatch(r"[A-Z]{2,3}", data_type):
        return None
    return datatype_reference(version, data_type) or ("leaf", None, data_type, None, None, -1)


def _write_value(element, value: str, reference, fallback: str, d: Delimiters, depth: int) -> None:
    """Write a field repetition (depth 0) or a component (1) into ``element``: a leaf, or its parts."""
    separator = d.component if depth == 0 else d.subcomponent
    composite = reference is not None and reference[0] == "sequence"
    # A primitive value written with separators (a sender's free text with '&' in v2.2) keeps them as parts.
    structured = composite or any(
        sep and sep in value for sep in (separator, d.subcomponent if depth == 0 else None)
    )
    if separator is None or depth > 1 or not structured:
        _write_leaf(element, value, d)
        return
    parts = value.split(separator)
    while parts and not parts[-1]:
        parts.pop()
    children = reference[1] if composite else ()
    type_name = reference[2] if composite else fallback
    for index, part in enumerate(parts, start=1):
        if not part:
            continue
        child_reference = children[index - 1][1] if index <= len(children) else None
        child = etree.SubElement(element, f"{_NS}{type_name}.{index}")
        _write_value(child, part, child_reference, f"{type_name}.{index}", d, depth + 1)


def _write_leaf(element: etree._Element, value: str, d: Delimiters) -> None:
    """Mixed content: unescaped text, with an <escape V=".."/> per sequence that is not a delimiter."""
    esc = d.escape
    literal = {"F": d.field, "S": d.component, "R": d.repetition, "E": esc}
    if d.subcomponent is not None:
        literal["T"] = d.subcomponent
    pieces: list[str | tuple[str]] = []  # text, or (escape body,)
    start = 0
    while True:
        opening = value.find(esc, start) if esc else -1
        closing = value.find(esc, opening + 1) if opening >= 0 else -1
        if opening < 0 or closing < 0:
            pieces.append(value[start:])
            break
        pieces.append(value[start:opening])
        body = value[opening + 1 : closing]
        pieces.append(literal[body] if body in literal else (body,))
        start = closing + 1
    last: etree._Element | None = None
    for piece in pieces:
        if isinstance(piece, tuple):
            last = etree.SubElement(element, _ESCAPE, V=piece[0])
            continue
        # Split on the characters XML refuses, kept (odd items): each becomes a hex escape.
        for index, text in enumerate(_NOT_XML.split(piece)):
            if index % 2:
                last = etree.SubElement(
                    element, _ESCAPE, V="X" + text.encode("utf-8", "surrogatepass").hex().upper()
                )
            elif text and last is None:
                element.text = (element.text or "") + text
            elif text:
                last.tail = (last.tail or "") + text


# ---------------------------------------------------------------------------------------------
# v2.xml -> ER7


def from_xml(data: bytes | str) -> str:
    """A v2.xml document as ER7 text (segments joined by CR); HL7Error when it is no v2.xml message."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data.encode("utf-8") if isinstance(data, str) else data, parser)
    except etree.XMLSyntaxError as error:
        raise HL7Error(f"not well-formed XML: {error}", code=100) from error
    return from_element(root)


def from_element(root: etree._Element) -> str:
    """A v2.xml element tree as ER7 text (segments joined by CR)."""
    segments = list(_segments(root))
    if not segments or etree.QName(segments[0]).localname not in HEADER_SEGMENTS:
        raise HL7Error("v2.xml message has no MSH element first", code=100)
    msh = segments[0]
    field_sep = _child_text(msh, "MSH.1") or "|"
    d = Delimiters.from_msh(field_sep, _child_text(msh, "MSH.2") or "^~\\&")
    return "\r".join(_read_segment(element, d) for element in segments)


def _segments(element: etree._Element):
    """The segment elements under ``element`` in document order (groups are walked into)."""
    for child in element:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if _SEGMENT_ID.fullmatch(etree.QName(child).localname):
            yield child
        else:
            yield from _segments(child)


def _child_text(element: etree._Element, name: str) -> str:
    for child in element:
        if isinstance(child.tag, str) and etree.QName(child).localname == name:
            return child.text or ""
    return ""


def _position(element: etree._Element) -> int:
    """The position an element name gives (``PID.5`` -> 5, ``XPN.1`` -> 1); 0 when it gives none."""
    suffix = etree.QName(element).localname.rsplit(".", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _read_segment(element: etree._Element, d: Delimiters) -> str:
    name = etree.QName(element).localname
    fields: dict[int, list[str]] = {}
    for child in element:
        if not isinstance(child.tag, str) or not (position := _position(child)):
            continue
        if name in HEADER_SEGMENTS and position <= 2:
            fields[position] = [child.text or ""]
        else:
            fields.setdefault(position, []).append(_read_value(child, d, 0))
    last = max(fields, default=0)
    values = [d.repetition.join(fields.get(i, [])) for i in range(1, last + 1)]
    if name in HEADER_SEGMENTS:
        return name + (values[0] if values else d.field) + d.field.join(values[1:])
    return d.field.join([name, *values])


def _read_value(element: etree._Element, d: Delimiters, depth: int) -> str:
    parts = {
        position: _read_value(child, d, depth + 1)
        for child in element
        if isinstance(child.tag, str) and child.tag != _ESCAPE and (position := _position(child))
    }
    if not parts:
        return _read_leaf(element, d)
    separator = d.component if depth == 0 else (d.subcomponent or d.component)
    return separator.join(parts.get(i, "") for i in range(1, max(parts) + 1))


def _read_leaf(element: etree._Element, d: Delimiters) -> str:
    esc = d.escape or "\\"
    out = [escape(element.text or "", d)]
    for child in element:
        if child.tag == _ESCAPE:
            out.append(f"{esc}{child.get('V', '')}{esc}")
        if child.tail:
            out.append(escape(child.tail, d))
    return "".join(out)
