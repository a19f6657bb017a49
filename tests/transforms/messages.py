"""Corpus messages the filter and transform tests work on."""

from __future__ import annotations

from hypothesis import strategies as st

from engine.hl7.charset import decode
from engine.hl7.message import Message
from tests.fakes.corpus import CORPUS_DIR

#: A full v2.8 ADT^A01: PID-3 with two repetitions, PID-5 with two names, \T\ in PV1-14, one OBX.
ADT_A01 = "adt/fhirconv_adt_a01_01.hl7"
#: A v2.5 ORU^R01 (UTF-8 BOM): two OBR, ten OBX, two of them with an empty OBX-5.
ORU_R01 = "oru/fhirconv_lab_oru_1.hl7"
#: An ADT^A24 whose delimiters are ^ (field), ~ (component), | (repetition), \ and &; two PIDs.
A24_ODD_DELIMITERS = "adt/hapi_segmentfinder_a24_nondefault_delims.hl7"


def corpus_message(file: str) -> Message:
    """A fresh Message of one corpus file, decoded as the engine decodes it."""
    return Message.parse(decode((CORPUS_DIR / file).read_bytes()).text)


_delimiter = st.sampled_from(list("|^~\\&#$%!@*:+-?/"))
_text = st.text(alphabet=st.sampled_from([*'AB01.+-:/ \\|^~&#$%!"', "é", "\x00"]), max_size=12)


@st.composite
def hl7_texts(draw) -> str:
    """Message text with random delimiters and segments made of delimiter-rich text (may not parse)."""
    chars = draw(st.lists(_delimiter, min_size=4, max_size=6, unique=True))
    field, encoding = chars[0], "".join(chars[1:])
    names = st.sampled_from(["PID", "OBX", "ZZZ", "MSH", "PV1"])
    segments = [f"MSH{field}{encoding}{field}{draw(_text)}{field}{draw(_text)}"]
    for _ in range(draw(st.integers(0, 5))):
        fields = draw(st.lists(_text, max_size=6))
        segments.append(field.join([draw(names), *fields]))
    return "\r".join(segments)
