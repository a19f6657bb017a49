"""Output encodings of the file and http destinations: the bytes a delivery's ER7 payload is sent as.

``ENCODINGS`` is a small table, name -> function of (payload, settings, charset): ``er7`` sends
the payload as it is, ``xml`` its v2.xml (``engine.hl7.xml``), or what the destination's
``xslt`` stylesheet makes of that v2.xml (any XML, or text), ``fhir`` a FHIR R4 transaction
Bundle in JSON (``engine.fhirmap``; files only). Another encoding is one more row (and its name in
``Encoded.encoding``). An encoding runs in the reactor's thread pool, with the write or before
the POST, never on the reactor thread (a large message takes tens of milliseconds to become a
Bundle).
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from engine.channels.destinations.spec import Encoded
from engine.errors import HL7Error
from engine.fhirmap.bundle import bundle_json
from engine.hl7.charset import decode
from engine.hl7.xml import from_xml, to_element
from engine.transforms.xml import apply_stylesheet

__all__ = ["ENCODINGS", "encode_payload", "reply_as_er7"]


def _er7(payload: bytes, settings: Encoded, charset: str) -> bytes:
    return payload


def _xml(payload: bytes, settings: Encoded, charset: str) -> bytes:
    root = to_element(decode(payload, "utf-8").text)
    if settings.xslt is None:
        return etree.tostring(root, xml_declaration=True, encoding=charset)
    result = apply_stylesheet(settings.xslt.compiled, root, dict(settings.xslt.parameters))
    return bytes(result)  # as the stylesheet's xsl:output says (method, encoding)


def _fhir(payload: bytes, settings: Encoded, charset: str) -> bytes:
    return bundle_json(payload, zone=settings.zone) + b"\n"  # JSON is UTF-8 whatever the charset


#: Encoding name -> function(payload, settings, charset) -> the bytes to send.
ENCODINGS: dict[str, Callable[[bytes, Encoded, str], bytes]] = {"er7": _er7, "xml": _xml, "fhir": _fhir}


def encode_payload(payload: bytes, settings: Encoded, charset: str = "utf-8") -> bytes:
    """The bytes ``payload`` (ER7) is sent as; HL7Error or TransformError when it cannot be encoded."""
    return ENCODINGS[settings.encoding](payload, settings, charset)


def reply_as_er7(body: bytes) -> bytes:
    """A reply as ER7: a v2.xml ACK (a body starting with '<') converted, anything else as it is.

    An XML reply that is no v2.xml message is kept as it is (it then reads as an unreadable ACK).
    """
    if body.lstrip()[:1] != b"<":
        return body
    try:
        return from_xml(body).encode("utf-8")
    except HL7Error:
        return body
