"""Generated patient journeys across a PMS, an EMR and a lab, each with its own identifiers and order.

``journeys(seed, people)`` makes, for each person, the messages each system sends about them, in
that system's order: registrations, appointments with a reschedule and a cancellation, an
admission, an A08 older than what the EMR sent before it (out of order), a result and its
correction, charges without FT1-2, a discharge, and for some people a duplicate registration the
PMS then merges with an A40. A stream is built from them by ``file_order`` (every message in time
order); ``twice_in_a_row`` and ``sent_again`` send each message a second time under a new control id.
Other orders of the same journeys (the three systems interleaved, each in its own order) can be
added beside them.

A message is HL7 text with ``{control}`` where its control id goes: ``render(message, control)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = [
    "SYSTEMS",
    "Journey",
    "file_order",
    "journeys",
    "render",
    "sent_again",
    "twice_in_a_row",
]

#: The sending application of each system (MSH-3) and the authority of the identifiers it assigns.
SYSTEMS = {"pms": "NORTHPMS", "emr": "STMARY_EMR", "lab": "CITYLAB"}

_FAMILIES = [
    "GARCIA",
    "NGUYEN",
    "OKAFOR",
    "SMITH",
    "KOWALSKI",
    "TANAKA",
    "MÜLLER",
    "SILVA",
    "DUBOIS",
    "ROSSI",
]
_GIVEN = ["MARIA", "ANH", "CHIDI", "JOHN", "ANNA", "YUKI", "HANS", "ANA", "CLAIRE", "LUCA"]
_ALLERGENS = [("7980", "Penicillin G"), ("1191", "Aspirin"), ("2670", "Codeine"), ("733", "Ampicillin")]
_TESTS = [("2093-3", "Cholesterol", "mg/dL"), ("2345-7", "Glucose", "mg/dL"), ("718-7", "Hemoglobin", "g/dL")]
_CHARGES = [
    ("99213", "Office visit", "85.00"),
    ("93000", "Electrocardiogram", "40.00"),
    ("36415", "Venipuncture", "12.50"),
]


@dataclass(frozen=True)
class Sent:
    """One message of a journey: its system, when it was made (EVN-2/MSH-7) and when sent, its text."""

    system: str
    at: datetime
    text: str
    sent_at: datetime


@dataclass
class Journey:
    """One person's messages, and the identifier each system knows them by."""

    ids: dict[str, str]
    messages: list[Sent] = field(default_factory=list)


def render(message: str, control: str) -> str:
    """The message's HL7 text with its control id (MSH-10)."""
    return message.replace("{control}", control)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _message(system: str, event: str, at: datetime, *segments: str, sent_at: datetime | None = None) -> Sent:
    sender = SYSTEMS[system]
    header = f"MSH|^~\\&|{sender}|{sender}|HUB|REGION|{_ts(at)}||{event}|{{control}}|P|2.5.1"
    evn = [f"EVN|{event.split('^')[1]}|{_ts(at)}"] if event[:3] in ("ADT", "DFT") else []
    return Sent(system, at, "\r".join([header, *evn, *segments]) + "\r", sent_at or at)


class _Person:
    """The demographics of one generated person and the PID each system sends."""

    def __init__(self, number: int, rng: random.Random):
        self.number = number
        self.family = _FAMILIES[number % len(_FAMILIES)] + ("" if number < len(_FAMILIES) else f"{number}")
        self.given = _GIVEN[number % len(_GIVEN)]
        self.birth = f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        self.sex = rng.choice("FM")
        self.phone = f"^PRN^PH^^1^217^555{rng.randint(1000, 9999)}"
        self.ids = {
            "pms": f"PMS-{number:04d}",
            "emr": f"MRN-{rng.randint(10000, 99999)}{number}",
            "lab": f"L-{number:03d}{rng.randint(100, 999)}",
        }

    def pid(self, *systems: str, phone: str | None = None, pms_id: str | None = None) -> str:
        """A PID listing the identifiers of ``systems`` (the sender's first), with this person's data."""
        ids = {**self.ids, **({"pms": pms_id} if pms_id else {})}
        kinds = {"pms": "PI", "emr": "MR", "lab": "PI"}
        cx = "~".join(f"{ids[system]}^^^{SYSTEMS[system]}^{kinds[system]}" for system in systems)
        name = f"{self.family}^{self.given}"
        address = f"{self.number} Main St^^Springfield^IL^62701"
        return f"PID|1||{cx}||{name}||{self.birth}|{self.sex}|||{address}||{phone or self.phone}"


def _pv1(klass: str, location: str, number: str | None = None, admitted: datetime | None = None) -> str:
    fields = (
        ["PV1", "1", klass, location]
        + [""] * 15
        + [number or ""]
        + [""] * 24
        + [_ts(admitted) if admitted else ""]
    )
    return "|".join(fields).rstrip("|")


def _journey(person: _Person, start: datetime, rng: random.Random, duplicate: bool) -> Journey:
    """The messages of one person's journey, in time order."""
    n = person.number
    journey = Journey(ids=dict(person.ids))
    add = journey.messages.append
    t = start
    clinic = f"NCL^EXAM{rng.randint(1, 4)}^^NORTHCLINIC"
    admit_time = t if rng.random() < 0.5 else None
    add(_message("pms", "ADT^A04^ADT_A01", t, person.pid("pms"), _pv1("O", clinic, admitted=admit_time)))

    def booking(
        event: str, at: datetime, appointment: int, start_at: datetime, minutes: int, status: str
    ) -> Sent:
        sch = (
            f"SCH|PL-{n}-{appointment}^NORTHPMS|APT-{n}-{appointment}||||NEW^New^HL70276|FU^Follow-up^LOCAL|"
            f"ROUTINE^Routine^HL70276|{minutes}|min|||||||||||||||{status}"
        )
        tq1 = f"TQ1|1||||||{_ts(start_at)}|{_ts(start_at + timedelta(minutes=minutes))}"
        ais = f"AIS|1|A|99213^Office visit^CPT|{_ts(start_at)}|||{minutes}|min"
        return _message("pms", f"SIU^{event}^SIU_S12", at, sch, tq1, person.pid("pms"), "RGS|1|A", ais)

    slot = start + timedelta(days=rng.randint(5, 9), hours=rng.randint(0, 6))
    add(booking("S12", t + timedelta(minutes=15), 1, slot, 30, "Booked"))
    add(booking("S13", t + timedelta(hours=2), 1, slot + timedelta(days=1), 45, "Booked"))
    add(booking("S12", t + timedelta(hours=3), 2, slot + timedelta(days=3), 30, "Booked"))
    add(booking("S15", t + timedelta(hours=4), 2, slot + timedelta(days=3), 30, "Cancelled"))

    t = start + timedelta(days=1, hours=rng.randint(0, 5))
    encounter = f"ENC-{n}^^^STMARY_EMR^VN"
    ward = f"4N^{rng.randint(400, 420)}^A^STMARY"
    code, allergen = rng.choice(_ALLERGENS)
    add(
        _message(
            "emr",
            "ADT^A01^ADT_A01",
            t,
            person.pid("emr", "pms"),
            _pv1("I", ward, encounter, t),
            f"AL1|1|DA^Drug allergy^HL70127|{code}^{allergen}^RXNORM|SV^Severe^HL70128|Hives",
        )
    )
    late_update = t + timedelta(minutes=20)

    t += timedelta(hours=2)
    tests = rng.sample(_TESTS, 2)

    def result(at: datetime, statuses: tuple[str, str], values: tuple[str, str]) -> Sent:
        obx = [
            f"OBX|{i}|NM|{code}^{name}^LN||{value}|{units}|||||{status}"
            for i, ((code, name, units), status, value) in enumerate(zip(tests, statuses, values), start=1)
        ]
        return _message(
            "lab",
            "ORU^R01^ORU_R01",
            at,
            person.pid("lab", "emr"),
            f"PV1|1|I|||||||||||||||||{encounter}",
            f"ORC|RE|ORD-{n}^STMARY_EMR|LAB-{n}||CM",
            f"OBR|1|ORD-{n}^STMARY_EMR|LAB-{n}|PANEL^Panel^L|||{_ts(at - timedelta(hours=1))}",
            *obx,
        )

    first = (str(rng.randint(80, 200)), str(rng.randint(5, 15)))
    add(result(t, ("F", "P"), first))
    # The EMR's update of the phone, made before the lab's result but arriving after it.
    add(
        _message(
            "emr",
            "ADT^A08^ADT_A01",
            late_update,
            person.pid("emr", "pms", phone="^PRN^PH^^1^217^5550000"),
            _pv1("I", ward, encounter),
            sent_at=t + timedelta(minutes=1),
        )
    )
    add(result(t + timedelta(hours=3), ("C", "F"), (str(int(first[0]) + 1), first[1])))

    t = start + timedelta(days=2)
    charges = [
        f"FT1|{i}||B-{n}|{_ts(t - timedelta(hours=i))}|{_ts(t)}|CG|{c}^{text}^CPT|||1|{amount}&USD"
        for i, (c, text, amount) in enumerate(rng.sample(_CHARGES, 2), start=1)
    ]
    add(_message("pms", "DFT^P03^DFT_P03", t, person.pid("pms"), _pv1("O", clinic), *charges))
    add(
        _message(
            "emr",
            "ADT^A03^ADT_A03",
            t + timedelta(hours=1),
            person.pid("emr", "pms"),
            _pv1("I", ward, encounter),
        )
    )

    if duplicate:
        t = start + timedelta(days=3)
        copy = f"PMS-{n:04d}D"
        add(
            _message(
                "pms", "ADT^A04^ADT_A01", t, person.pid("pms", pms_id=copy), _pv1("O", clinic, admitted=t)
            )
        )
        add(
            _message(
                "pms",
                "ADT^A40^ADT_A39",
                t + timedelta(hours=1),
                person.pid("pms"),
                f"MRG|{copy}^^^NORTHPMS^PI",
            )
        )
    return journey


def journeys(seed: int, people: int) -> list[Journey]:
    """``people`` journeys from ``seed``, starting hours apart (they overlap); every third has a duplicate."""
    rng = random.Random(seed)
    start = datetime(2024, 3, 1, 8, 0)
    return [
        _journey(_Person(number, rng), start + timedelta(hours=5 * number), rng, duplicate=number % 3 == 0)
        for number in range(1, people + 1)
    ]


def file_order(found: list[Journey]) -> list[str]:
    """Every message of the journeys in the order they were sent (the late A08 after the result)."""
    sent = sorted((message for journey in found for message in journey.messages), key=lambda m: m.sent_at)
    return [message.text for message in sent]


def twice_in_a_row(stream: list[str]) -> list[str]:
    """Each message followed by itself again (a resend after a lost ACK)."""
    return [text for message in stream for text in (message, message)]


def sent_again(stream: list[str]) -> list[str]:
    """The whole stream, then the whole stream again (a sender replaying its history)."""
    return stream + stream
