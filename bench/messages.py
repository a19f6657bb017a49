"""Realistic generated HL7 v2 messages for the load generator: ADT^A01/A04/A08, ORU^R01, SIU^S12, DFT^P03.

Everything is drawn from one seeded ``random.Random``, so a seed always gives the same messages.
Each message is kept as a ``Template`` split around MSH-10: the load generator writes a fresh,
unique control id into every message it sends at the cost of one bytes join. No patient in here
is real; names, identifiers and values are made up.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

# How often each kind is drawn: registrations dominate a hospital feed, then results.
MIX = (
    ("ADT^A01", 15),
    ("ADT^A04", 15),
    ("ADT^A08", 15),
    ("ORU^R01", 25),
    ("SIU^S12", 15),
    ("DFT^P03", 15),
)

_FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Martinez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Müller",
    "Øvergård",
    "Nguyễn",
    "Kowalczyk",
    "O'Brien",
    "Dubois",
    "Rossi",
    "Sánchez",
]
_GIVEN_F = [
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Zoë",
    "Inés",
]
_GIVEN_M = [
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "José",
    "Jürgen",
]
_STREETS = [
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Park Rd",
    "Lake View Blvd",
    "Hillcrest Way",
]
_CITIES = [
    ("Springfield", "IL", "62701"),
    ("Madison", "WI", "53703"),
    ("Salem", "OR", "97301"),
    ("Dover", "DE", "19901"),
    ("Austin", "TX", "78701"),
    ("Albany", "NY", "12207"),
]
_DOCTORS = [
    ("1234567890", "Chen", "Lisa"),
    ("2345678901", "Okafor", "Emeka"),
    ("3456789012", "Novak", "Petra"),
    ("4567890123", "Reyes", "Carlos"),
    ("5678901234", "Schmidt", "Anna"),
]
_SENDERS = [
    ("PMS", "NORTHCLINIC"),
    ("PMS", "SOUTHCLINIC"),
    ("EPICADT", "GENHOSP"),
    ("LABSYS", "CENTRALLAB"),
    ("SCHED", "GENHOSP"),
    ("BILLING", "GENHOSP"),
]
_ALLERGENS = [
    ("PCN", "Penicillin", "SV"),
    ("SULF", "Sulfonamides", "MO"),
    ("LATEX", "Latex", "MI"),
    ("PEANUT", "Peanuts", "SV"),
]
_DIAGNOSES = [
    ("I10", "Essential (primary) hypertension"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("J18.9", "Pneumonia, unspecified organism"),
    ("R07.9", "Chest pain, unspecified"),
    ("S72.001A", "Fracture of unspecified part of neck of right femur"),
]
_INSURERS = [
    ("BCBS01", "Blue Cross Blue Shield"),
    ("AET01", "Aetna"),
    ("MCR", "Medicare Part A"),
    ("UHC02", "UnitedHealthcare"),
]
# A basic metabolic panel plus a CBC subset: LOINC code, name, units, low, high, typical value, decimals.
_PANEL = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 92, 0),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20, 14, 0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 0.9, 2),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 140, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 4.2, 1),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 102, 0),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 22, 29, 25, 0),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", 8.6, 10.3, 9.4, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11.0, 7.2, 1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 14.1, 1),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 250, 0),
]
_PROCEDURES = [
    ("99213", "Office visit, established patient, low complexity", "85.00"),
    ("80048", "Basic metabolic panel", "32.50"),
    ("85025", "Complete blood count with differential", "18.75"),
    ("71046", "Chest X-ray, 2 views", "120.00"),
    ("93000", "Electrocardiogram, complete", "45.00"),
]
_APPOINTMENTS = [
    ("FOLLOWUP", "Follow-up visit", 20),
    ("NEWPT", "New patient visit", 40),
    ("ANNUAL", "Annual physical", 30),
    ("LABDRAW", "Laboratory draw", 10),
]

_START = datetime(2026, 3, 2, 7, 0, 0)
_POOL_SEED = 1_000_003
_POOL_FIRST_MRN = (
    5_000_000  # pool MRNs are 5000000, 5000001, ...: apart from each other, whatever the pool size
)


@dataclass(frozen=True, slots=True)
class Template:
    """One generated message with a hole at MSH-10: ``head + control_id + tail`` is the whole message."""

    kind: str
    head: bytes
    tail: bytes

    def render(self, control_id: bytes) -> bytes:
        """The message bytes with this control id in MSH-10."""
        return self.head + control_id + self.tail


def generate(
    count: int, seed: int = 2575, patients: int | None = None, kinds: Collection[str] | None = None
) -> list[Template]:
    """``count`` messages drawn from MIX (only its ``kinds`` when given), the same for the same seed.

    By default every message is about a patient of its own. With ``patients`` each message is
    about one of a pool of that many, the same pool for every seed (so that the messages of
    several connections share it): each patient recurs across message kinds and senders, with
    the same identifiers and demographics, as in a hospital's feed.
    """
    rng = random.Random(seed)
    pool = patient_pool(patients) if patients else None
    mix = [(kind, weight) for kind, weight in MIX if kinds is None or kind in kinds]
    if not mix:
        raise ValueError(f"no kind of the mix is one of {sorted(kinds or ())}")
    drawn, weights = [kind for kind, _ in mix], [weight for _, weight in mix]
    return [_build(rng, rng.choices(drawn, weights)[0], index, pool) for index in range(count)]


def patient_pool(size: int) -> list[dict]:
    """``size`` made-up patients with distinct medical record numbers, the same for the same size."""
    rng = random.Random(_POOL_SEED)
    return [{**_patient(rng), "mrn": f"{_POOL_FIRST_MRN + number}"} for number in range(size)]


def patient_id(template: Template) -> str:
    """PID-3.1 of the first repetition: the medical record number the message is about."""
    pid = template.tail[template.tail.index(b"\rPID|") + 1 :]
    return pid.split(b"\r", 1)[0].split(b"|")[3].split(b"~")[0].split(b"^")[0].decode()


_CONTROL_ID_HOLE = "\x00CONTROL-ID\x00"
_CHARSET_HOLE = "\x00CHARSET\x00"


def _build(rng: random.Random, kind: str, index: int, pool: list[dict] | None) -> Template:
    when = _START + timedelta(seconds=index * 7 + rng.randint(0, 6))
    patient = _patient(rng) if pool is None else rng.choice(pool)
    builders = {"ADT": _adt, "ORU": _oru, "SIU": _siu, "DFT": _dft}
    segments = builders[kind[:3]](rng, kind, when, patient)
    text = "\r".join(segments) + "\r"
    # MSH-18 is given when the content is not plain ASCII, as a careful sender does.
    text = text.replace(_CHARSET_HOLE, "" if text.isascii() else "UNICODE UTF-8")
    head, tail = text.encode("utf-8").split(_CONTROL_ID_HOLE.encode())
    return Template(kind, head, tail)


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S")


def _msh(rng: random.Random, kind: str, structure: str, when: datetime) -> str:
    application, facility = rng.choice(_SENDERS)
    return (
        f"MSH|^~\\&|{application}|{facility}|HL7ENGINE|HUB|{_ts(when)}-0500||{kind}^{structure}|"
        f"{_CONTROL_ID_HOLE}|P|2.5.1|||||USA|{_CHARSET_HOLE}"
    )


def _patient(rng: random.Random) -> dict:
    sex = rng.choice("FM")
    family = rng.choice(_FAMILY)
    given = rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M)
    middle = rng.choice("ABCDEFGHJKLMNPRSTW")
    city, state, zip_code = rng.choice(_CITIES)
    born = datetime(1930, 1, 1) + timedelta(days=rng.randint(0, 33000))
    return {
        "mrn": f"{rng.randint(100000, 9999999)}",
        "account": f"A{rng.randint(10000000, 99999999)}",
        "visit": f"V{rng.randint(1000000, 9999999)}",
        "family": family,
        "given": given,
        "middle": middle,
        "sex": sex,
        "dob": born.strftime("%Y%m%d"),
        "street": f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}",
        "city": city,
        "state": state,
        "zip": zip_code,
        "phone": f"^PRN^PH^^1^{rng.randint(200, 989)}^{rng.randint(2000000, 9999999)}",
        "ssn": f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "doctor": rng.choice(_DOCTORS),
    }


def _pid(p: dict) -> str:
    return (
        f"PID|1||{p['mrn']}^^^MAIN^MR~{p['ssn']}^^^SSA^SS||{p['family']}^{p['given']}^{p['middle']}^^^^L||"
        f"{p['dob']}|{p['sex']}||2106-3^White^CDCREC|{p['street']}^^{p['city']}^{p['state']}^{p['zip']}^USA^H||"
        f"{p['phone']}|||M^Married^HL70002||{p['account']}^^^MAIN^AN"
    )


def _pv1(p: dict, patient_class: str, when: datetime) -> str:
    npi, family, given = p["doctor"]
    return (
        f"PV1|1|{patient_class}|MED^{200 + len(p['mrn']) % 50}^1^GENHOSP||||"
        f"{npi}^{family}^{given}^^^Dr^^^NPI|||MED||||1|||"
        f"{npi}^{family}^{given}^^^Dr^^^NPI|IN||||||||||||||||||||||||{_ts(when)}"
    )


def _adt(rng: random.Random, kind: str, when: datetime, p: dict) -> list[str]:
    segments = [
        _msh(rng, kind, "ADT_A01", when),
        f"EVN|{kind[4:]}|{_ts(when)}|||{rng.choice(['REGCLERK1', 'REGCLERK2', 'ADMIT01'])}^Registrar^Reg",
        _pid(p),
        f"PD1|||GENHOSP^^1001|{p['doctor'][0]}^{p['doctor'][1]}^{p['doctor'][2]}^^^Dr^^^NPI",
        f"NK1|1|{rng.choice(_FAMILY)}^{rng.choice(_GIVEN_F + _GIVEN_M)}|SPO^Spouse^HL70063|"
        f"{p['street']}^^{p['city']}^{p['state']}^{p['zip']}^USA|"
        f"{p['phone']}||EC^Emergency Contact^HL70131",
        _pv1(p, "I" if kind == "ADT^A01" else "O", when),
    ]
    for set_id, (code, name, severity) in enumerate(rng.sample(_ALLERGENS, rng.randint(0, 2)), start=1):
        segments.append(f"AL1|{set_id}|DA^Drug allergy^HL70127|{code}^{name}^LOCAL|{severity}|Rash")
    code, name = rng.choice(_DIAGNOSES)
    segments.append(f"DG1|1||{code}^{name}^I10|||A")
    insurer, insurer_name = rng.choice(_INSURERS)
    segments.append(
        f"IN1|1|PLAN{rng.randint(100, 999)}|{insurer}|{insurer_name}|"
        f"PO Box {rng.randint(100, 9999)}^^Hartford^CT^06101||"
        f"{rng.randint(8000000000, 8999999999)}|GRP{rng.randint(10000, 99999)}||||20260101|20261231|||"
        f"{p['family']}^{p['given']}|SEL^Self^HL70063|{p['dob']}"
    )
    return segments


def _oru(rng: random.Random, kind: str, when: datetime, p: dict) -> list[str]:
    order = f"ORD{rng.randint(1000000, 9999999)}"
    filler = f"LAB{rng.randint(1000000, 9999999)}"
    npi, family, given = p["doctor"]
    collected = when - timedelta(hours=rng.randint(1, 6))
    segments = [
        _msh(rng, kind, "ORU_R01", when),
        _pid(p),
        _pv1(p, "O", when),
        f"ORC|RE|{order}^EMR|{filler}^LAB||CM||||{_ts(when)}|||{npi}^{family}^{given}^^^Dr^^^NPI",
        f"OBR|1|{order}^EMR|{filler}^LAB|24323-8^Comprehensive metabolic and CBC panel^LN|||"
        f"{_ts(collected)}|||||||"
        f"{_ts(collected)}|Blood|{npi}^{family}^{given}^^^Dr^^^NPI||||||{_ts(when)}|||F",
    ]
    for set_id, (loinc, name, units, low, high, typical, decimals) in enumerate(
        rng.sample(_PANEL, 10), start=1
    ):
        value = round(rng.gauss(typical, (high - low) / 4), decimals)
        value = max(value, 0)
        flag = "L" if value < low else "H" if value > high else "N"
        shown = f"{value:.{decimals}f}"
        segments.append(
            f"OBX|{set_id}|NM|{loinc}^{name}^LN||{shown}|{units}^{units}^UCUM|{low}-{high}|{flag}|||F|||"
            f"{_ts(collected)}|CENTRALLAB^Central Laboratory^CLIA"
        )
    segments.append("NTE|1|L|Specimen received in good condition. Results verified by the laboratory.")
    return segments


def _siu(rng: random.Random, kind: str, when: datetime, p: dict) -> list[str]:
    code, label, minutes = rng.choice(_APPOINTMENTS)
    start = (when + timedelta(days=rng.randint(1, 60))).replace(minute=rng.choice([0, 15, 30, 45]), second=0)
    npi, family, given = p["doctor"]
    appointment = f"APT{rng.randint(1000000, 9999999)}"
    return [
        _msh(rng, kind, "SIU_S12", when),
        f"SCH|{appointment}^SCHED|{appointment}^SCHED|||||{code}^{label}|NORMAL^Routine^HL70276|{minutes}|MIN|"
        f"^^{minutes}^{_ts(start)}^{_ts(start + timedelta(minutes=minutes))}|||||{npi}^{family}^{given}|||||"
        f"{npi}^{family}^{given}|||||Booked",
        _pid(p),
        _pv1(p, "O", when),
        "RGS|1|A",
        f"AIS|1|A|{code}^{label}^LOCAL|{_ts(start)}|0|MIN|{minutes}|MIN",
        f"AIG|1|A|{npi}^{family}^{given}|D^Doctor",
        f"AIL|1|A|CLINIC^{rng.randint(1, 20)}^^GENHOSP|EXAM^Exam room",
        f"AIP|1|A|{npi}^{family}^{given}^^^Dr^^^NPI|ATND^Attending",
    ]


def _dft(rng: random.Random, kind: str, when: datetime, p: dict) -> list[str]:
    segments = [
        _msh(rng, kind, "DFT_P03", when),
        f"EVN|P03|{_ts(when)}",
        _pid(p),
        _pv1(p, "O", when),
    ]
    for set_id, (code, name, amount) in enumerate(rng.sample(_PROCEDURES, rng.randint(1, 3)), start=1):
        segments.append(
            f"FT1|{set_id}|{rng.randint(100000, 999999)}||{_ts(when)}|{_ts(when)}|CG|{code}^{name}^CPT|||1|"
            f"{amount}^USD|{amount}^USD|MED^Medicine||||||{p['doctor'][0]}^{p['doctor'][1]}^{p['doctor'][2]}||||"
            f"{code}^{name}^C4"
        )
    code, name = rng.choice(_DIAGNOSES)
    segments.append(f"DG1|1||{code}^{name}^I10|||F")
    return segments
