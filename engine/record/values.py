"""The pure readers of the record: a message's segments turned into the values of its rows.

Each reader takes segments (``SegmentReader``) and gives column values by HL7's empty-vs-null
rule (see engine/record/extract.py): ``KEEP`` for what the message does not send, None for what it
clears. Nothing here reads or writes the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any

from engine.hl7.dtm import parse_partial_date, parse_timestamp
from engine.record.extract import KEEP, PatientGroup, Remembered, SegmentReader, parse_decimal
from engine.record.person import normalise

__all__ = [
    "allergy_values",
    "appointment_values",
    "coded_key",
    "contact_values",
    "coverage_values",
    "described",
    "diagnosis_values",
    "observation_code",
    "observation_sub_id",
    "observation_values",
    "pid_values",
    "resource_rows",
    "result_status",
    "rule_demographics",
    "sent_demographics",
    "transaction_id",
    "transaction_values",
    "visit_number",
    "visit_status",
    "visit_values",
]

_RESOURCE_KINDS = {"AIS": "service", "AIG": "resource", "AIL": "location", "AIP": "personnel"}
# field numbers of (code, start, duration, duration units, role) in each resource segment
_RESOURCE_FIELDS = {
    "AIS": (3, 4, 7, 8, None),
    "AIG": (3, 8, 11, 12, 4),
    "AIL": (3, 6, 9, 10, 4),
    "AIP": (3, 6, 9, 10, 4),
}


def allergy_values(al1: SegmentReader, code: dict[str, Any]) -> dict[str, Any]:
    """An AL1's columns: its code (AL1-3, already read), type, severity, reaction, identification date."""
    return {
        **code,
        **al1.columns_of(
            (2, {"allergy_type": "2.1"}),
            (4, {"severity": "4.1"}),
            (5, {"reaction": "5"}),
            (6, {"identified_date": ("6.1", parse_partial_date)}),
        ),
    }


def described(segment: SegmentReader) -> dict[str, Any]:
    """Field 3 of a DG1 or PR1 (coded), its text from field 4 (the description) when field 3 has none."""
    code = segment.coded(3)
    if code["text"] in (None, KEEP) and segment.part("4"):
        code["text"] = segment.part("4")
    return code


def diagnosis_values(dg1: SegmentReader, code: dict[str, Any], local: tzinfo) -> dict[str, Any]:
    """A DG1's columns: its code (already read), diagnosis type and time."""
    return {
        **code,
        **dg1.columns_of(
            (6, {"diagnosis_type": "6.1"}),
            (5, {"diagnosed_at": ("5.1", lambda text: parse_timestamp(text, local))}),
        ),
    }


def coded_key(values: dict[str, Any], **key: Any) -> dict[str, Any]:
    """A fact's key: its code, or its text when it has no code."""
    code = values.get("code")
    if code not in (KEEP, None):
        return {**key, "code": code}
    text = values.get("text")
    return {**key, "code": None, "text": None if text is KEEP else text}


def rule_demographics(values: dict[str, Any], lists: dict[str, Any]) -> dict[str, str]:
    """What the identity rule compares, normalised: the first name's family and given, birth date, sex."""
    names = lists["record_names"]
    first_name = names[0] if names else {}
    return {
        "family": normalise(first_name.get("family")),
        "given": normalise(first_name.get("given")),
        "birth_date": values["birth_date"] or "",
        "sex": values["sex"] or "",
    }


# The PIDs ``pid_values`` read, by their text (with the delimiters) and timezone.
PIDS = Remembered(2_000)


def pid_values(pid: SegmentReader, local: tzinfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """The patient's columns and lists (names, addresses, telecoms: KEEP when the field is absent).

    A PID read before gives what it gave then (two new dicts; the rows in the lists are shared:
    never change them).
    """
    values, lists = PIDS.get((pid.source, local), lambda: _read_pid(pid, local))
    return dict(values), dict(lists)


def _read_pid(pid: SegmentReader, local: tzinfo) -> tuple[dict[str, Any], dict[str, Any]]:
    """``pid_values``, read."""
    values = pid.columns_of(
        (7, {"birth_date": ("7.1", parse_partial_date)}),
        (8, {"sex": ("8.1", str.upper)}),
        (15, {"language": "15.1"}),
        (16, {"marital_status": "16.1"}),
        (19, {"ssn": "19.1"}),
        (29, {"deceased_at": ("29.1", lambda text: parse_timestamp(text, local))}),
        (30, {"deceased": ("30.1", lambda text: {"Y": True, "N": False}.get(text.upper()))}),
    )
    if values["language"] is None and pid.sent(15):
        values["language"] = pid.part("15.4")
    lists: dict[str, Any] = {
        "record_names": _repeated(pid, 5, _name),
        "record_addresses": _repeated(pid, 11, _address),
    }
    home, work = _repeated(pid, 13, _telecom), _repeated(pid, 14, _telecom)
    if home is KEEP and work is KEEP:
        lists["record_telecoms"] = KEEP
    else:
        lists["record_telecoms"] = [{**t, "use": "home"} for t in home or []] + [
            {**t, "use": "work"} for t in work or []
        ]
    return values, lists


# The PID fields of each demographic column and list (contacts come from NK1 segments).
_PID_FIELDS = {
    "birth_date": (7,),
    "sex": (8,),
    "language": (15,),
    "marital_status": (16,),
    "ssn": (19,),
    "deceased_at": (29,),
    "deceased": (30,),
    "record_names": (5,),
    "record_addresses": (11,),
    "record_telecoms": (13, 14),
}


def sent_demographics(group: PatientGroup) -> set[str]:
    """The demographics (``schema.DEMOGRAPHICS``) a patient group sends (values or nulls), not read."""
    pid = group.pid
    sent = {name for name, fields in _PID_FIELDS.items() if any(pid.sent(n) is not False for n in fields)}
    return (sent | {"record_contacts"}) if group.contacts else sent


def _repeated(reader: SegmentReader, n: int, read: Callable[[SegmentReader, int, int], dict | None]) -> Any:
    state = reader.sent(n)
    if state is False:
        return KEEP
    if state is None:
        return []
    rows = [read(reader, n, repetition) for repetition in range(1, reader.repetitions(n) + 1)]
    return [row for row in rows if row]


# The readers of a repeated field's repetition below take its field and repetition numbers: paths
# written and read back for each would cost more than the reads (a hundred a message).


def _name(reader: SegmentReader, n: int, r: int) -> dict | None:
    part = reader.part_at
    row = {
        "family": part(n, r, 1, 1),
        "given": part(n, r, 2),
        "middle": part(n, r, 3),
        "suffix": part(n, r, 4),
        "prefix": part(n, r, 5),
        "name_type": part(n, r, 7),
    }
    if not (row["family"] or row["given"]):
        return None
    return {
        **row,
        "family_key": normalise(row["family"]) or None,
        "given_key": normalise(row["given"]) or None,
    }


def _address(reader: SegmentReader, n: int, r: int) -> dict | None:
    part = reader.part_at
    row = {
        "line1": part(n, r, 1, 1),
        "line2": part(n, r, 2),
        "city": part(n, r, 3),
        "state": part(n, r, 4),
        "postal_code": part(n, r, 5),
        "country": part(n, r, 6),
        "address_type": part(n, r, 7),
    }
    return row if any(row.values()) else None


def _phone(reader: SegmentReader, n: int, r: int) -> str | None:
    part = reader.part_at
    email = part(n, r, 4)
    if email and "@" in email:
        return email
    local = part(n, r, 7)
    if local:
        country, area, extension = part(n, r, 5), part(n, r, 6), part(n, r, 8)
        return "".join(
            [
                f"+{country} " if country else "",
                f"({area}) " if area else "",
                local,
                f" x{extension}" if extension else "",
            ]
        )
    return part(n, r, 1) or email


def _telecom(reader: SegmentReader, n: int, r: int) -> dict | None:
    value = _phone(reader, n, r)
    if value is None:
        return None
    return {"value": value, "use_code": reader.part_at(n, r, 2), "equipment": reader.part_at(n, r, 3)}


def contact_values(nk1: SegmentReader) -> dict[str, Any]:
    """An NK1 as a record_contacts row: name, relationship and first phone."""
    relationship = {
        name: (None if value is KEEP else value) for name, value in nk1.coded(3, "relationship_").items()
    }
    return {
        "family": nk1.part("2.1.1"),
        "given": nk1.part("2.2"),
        **relationship,
        "phone": _phone(nk1, 5, 1) if nk1.sent(5) else None,
    }


def _location_display(reader: SegmentReader, n: int) -> str | None:
    part = reader.part_at
    parts = [part(n, 1, 1), part(n, 1, 2), part(n, 1, 3), part(n, 1, 4, 1)]
    return " ".join(part for part in parts if part) or None


def visit_number(pv1: SegmentReader) -> Any:
    """PV1-19.1, the visit number (KEEP when absent, None when null)."""
    return pv1.columns(19, {"visit_number": "19.1"})["visit_number"]


def visit_values(
    pv1: SegmentReader, pv2: SegmentReader | None, local: tzinfo, *, pid: SegmentReader | None = None
) -> dict[str, Any]:
    """The visit's columns from PV1, PV2-3 (the admit reason) and PID-18.1 (the account); not the status."""

    def time(text: str) -> datetime | None:
        return parse_timestamp(text, local)

    values: dict[str, Any] = {
        "visit_number": visit_number(pv1),
        **pv1.columns_of(
            (2, {"patient_class": "2.1"}),
            (3, {"point_of_care": "3.1", "room": "3.2", "bed": "3.3", "facility": "3.4.1"}),
            (10, {"hospital_service": "10.1"}),
            (36, {"discharge_disposition": "36.1"}),
            (44, {"admitted_at": ("44.1", time)}),
            (45, {"discharged_at": ("45.1", time)}),
        ),
        "prior_location": KEEP
        if pv1.sent(6) is False
        else (_location_display(pv1, 6) if pv1.sent(6) else None),
    }
    for field_number, prefix in ((7, "attending"), (8, "referring")):
        state = pv1.sent(field_number)
        person = pv1.person(field_number) if state else (None, None)
        values[f"{prefix}_id"], values[f"{prefix}_name"] = (KEEP, KEEP) if state is False else person
    values["account_number"] = pid.columns(18, {"a": "18.1"})["a"] if pid is not None else KEEP
    values["admit_reason"] = KEEP
    if pv2 is not None and pv2.sent(3) is not False:
        values["admit_reason"] = (pv2.part("3.2") or pv2.part("3.1")) if pv2.sent(3) else None
    return values


def visit_status(values: dict[str, Any]) -> str:
    """The status of a visit first seen in a message that does not say (A08, ORU, SIU, DFT)."""
    if isinstance(values.get("discharged_at"), datetime):
        return "finished"
    if isinstance(values.get("admitted_at"), datetime):
        return "in-progress"
    return "unknown"


def coverage_values(in1: SegmentReader, in2: SegmentReader | None) -> dict[str, Any]:
    """An IN1 (and its IN2) as record_coverages columns: plan, company, group, dates, insured, numbers."""
    insured = " ".join(part for part in (in1.part("16.2"), in1.part("16.1.1")) if part) or None
    values = {
        **in1.columns_of(
            (2, {"plan_id": "2.1", "plan_name": "2.2"}),
            (3, {"company_id": "3.1"}),
            (4, {"company_name": "4.1"}),
            (8, {"group_number": "8"}),
            (9, {"group_name": "9.1"}),
            (12, {"effective_date": ("12", parse_partial_date)}),
            (13, {"expiration_date": ("13", parse_partial_date)}),
            (17, {"relationship": "17.1"}),
            (36, {"policy_number": "36"}),
        ),
        "insured_name": KEEP if in1.sent(16) is False else insured,
        "member_number": in1.part("49.1") or in1.part("36") or KEEP,
    }
    if in2 is not None:
        values.update(in2.columns_of((6, {"medicare_number": "6"}), (8, {"medicaid_number": "8"})))
    return values


def _minutes(amount: str | None, units: str | None) -> int | None:
    number = parse_decimal(amount or "")
    if number is None:
        return None
    unit = (units or "MIN").upper()
    if unit.startswith("S"):
        number /= 60
    elif unit.startswith("H"):
        number *= 60
    elif unit.startswith("D"):
        number *= 1440
    return int(number)


def _float(text: str | None) -> float | None:
    number = parse_decimal(text or "")
    return float(number) if number is not None else None


def appointment_values(
    sch: SegmentReader, tq1: SegmentReader | None, resources: list[SegmentReader], local: tzinfo
) -> dict[str, Any]:
    """The appointment's columns: reason, type and status from SCH; its times from TQ1, SCH-11 or a resource.

    Start and end come from TQ1, else SCH-11; a missing start or duration from the first resource
    that has one; a missing end from start and duration.
    """

    def time(text: str) -> datetime | None:
        return parse_timestamp(text, local)

    values: dict[str, Any] = {**sch.coded(7, "reason_"), **sch.coded(8, "type_")}
    if values["reason_code"] is KEEP and sch.part("6.1"):
        values.update(sch.coded(6, "reason_"))
    values.update(sch.columns(25, {"status": "25.1"}))
    start = end = KEEP
    if tq1 is not None:
        start, end = (
            tq1.columns(7, {"v": ("7.1", time)})["v"],
            tq1.columns(8, {"v": ("8.1", time)})["v"],
        )
    if start is KEEP:
        start = sch.columns(11, {"v": ("11.4", time)})["v"]
    if end is KEEP:
        end = sch.columns(11, {"v": ("11.5", time)})["v"]
    duration = _minutes(sch.part("9"), sch.part("10.1"))
    for resource in resources:
        _, start_field, duration_field, units_field, _ = _RESOURCE_FIELDS[resource.name]
        if start is KEEP or start is None:
            start = time(resource.get(f"{start_field}.1")) or start
        if duration is None:
            duration = _minutes(resource.part(f"{duration_field}"), resource.part(f"{units_field}.1"))
    if isinstance(start, datetime) and end in (KEEP, None) and duration is not None:
        end = start + timedelta(minutes=duration)
    if isinstance(start, datetime) and isinstance(end, datetime) and duration is None:
        duration = int((end - start).total_seconds() // 60)
    values.update(start_at=start, end_at=end, duration_minutes=KEEP if duration is None else duration)
    return values


def resource_rows(resources: list[SegmentReader], local: tzinfo) -> list[dict[str, Any]]:
    """The appointment's resources (AIS, AIG, AIL, AIP) as record_appointment_resources rows, in order."""
    rows = []
    for resource in resources:
        code_field, start_field, duration_field, units_field, role_field = _RESOURCE_FIELDS[resource.name]
        if resource.name == "AIL":
            code = {
                "code": resource.part(f"{code_field}.1"),
                "text": _location_display(resource, code_field),
                "system": None,
            }
        elif resource.name == "AIP":
            person_id, person_name = resource.person(code_field)
            code = {"code": person_id, "text": person_name, "system": None}
        else:
            code = {
                name: (None if value is KEEP else value) for name, value in resource.coded(code_field).items()
            }
        role = None
        if role_field is not None:
            role = resource.part(f"{role_field}.2") or resource.part(f"{role_field}.1")
        rows.append(
            {
                "kind": _RESOURCE_KINDS[resource.name],
                **code,
                "role": role,
                "start_at": parse_timestamp(resource.get(f"{start_field}.1"), local),
                "duration_minutes": _minutes(
                    resource.part(f"{duration_field}"), resource.part(f"{units_field}.1")
                ),
            }
        )
    return rows


def observation_code(obx: SegmentReader) -> dict[str, str | None]:
    """OBX-3 as code, text and system (None when absent)."""
    return {name: (None if value is KEEP else value) for name, value in obx.coded(3).items()}


def observation_sub_id(obx: SegmentReader) -> str:
    """OBX-4, the observation sub-id ("" when absent)."""
    return (obx.part("4") or "")[:20]


def result_status(obx: SegmentReader) -> str:
    """OBX-11, the result status ("" when absent)."""
    return (obx.part("11") or "")[:2].upper()


def observation_values(
    obx: SegmentReader, local: tzinfo, identity: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An OBX's columns; its value read by type (numeric, structured, coded, encapsulated, time, text).

    ``identity``: its code, text, system and sub_id when already read (they are read first, as a key).
    """
    value_type = (obx.part("2.1") or "").upper()
    values: dict[str, Any] = {
        **(identity or {**observation_code(obx), "sub_id": observation_sub_id(obx)}),
        "value_type": value_type or None,
        "value": None,
        "numeric_value": None,
        "comparator": None,
        "separator": None,
        "numeric_high": None,
        "coded_code": None,
        "coded_text": None,
        "coded_system": None,
        "media_type": None,
        "encoding": None,
        "units": obx.part("6.1") or obx.part("6.2"),
        "reference_range": obx.part("7"),
        "abnormal_flags": "~".join(
            flag for r in range(1, obx.repetitions(8) + 1) if (flag := obx.part_at(8, r, 1))
        )
        or None,
        "status": result_status(obx),
        "observed_at": parse_timestamp(obx.get("14.1"), local),
        "performing_lab": obx.part("23.1") or obx.part("15.2") or obx.part("15.1"),
    }
    if obx.sent(5) is not True:
        return values
    if value_type == "NM":
        values["value"] = obx.part("5")
        values["numeric_value"] = _float(values["value"])
    elif value_type == "SN":
        comparator, first, separator, second = (obx.part_at(5, 1, c) for c in (1, 2, 3, 4))
        values.update(
            comparator=comparator,
            numeric_value=_float(first),
            separator=separator,
            numeric_high=_float(second),
        )
        values["value"] = "".join(part for part in (comparator, first, separator, second) if part) or None
    elif value_type in ("CE", "CWE", "CNE", "CF"):
        values.update(coded_code=obx.part("5.1"), coded_text=obx.part("5.2"), coded_system=obx.part("5.3"))
        values["value"] = values["coded_text"] or values["coded_code"]
    elif value_type == "ED":
        subtype = obx.part("5.3")
        media = "/".join(part for part in (obx.part("5.2"), subtype) if part)
        values.update(
            media_type=media.lower() or None, encoding=obx.part("5.4"), value=obx.get("5.5") or None
        )
    elif value_type == "DT":
        values["value"] = parse_partial_date(obx.get("5.1")) or obx.part("5")
    elif value_type in ("TS", "DTM"):
        moment = parse_timestamp(obx.get("5.1"), local)
        values["value"] = moment.isoformat() if moment else obx.part("5")
    else:
        lines = [obx.get(f"5[{r}]") for r in range(1, obx.repetitions(5) + 1)]
        values["value"] = "\n".join(lines) or None
    return values


def transaction_id(ft1: SegmentReader) -> Any:
    """FT1-2.1, the transaction id (KEEP when absent, None when null)."""
    return ft1.columns(2, {"transaction_id": "2.1"})["transaction_id"]


def transaction_values(ft1: SegmentReader, local: tzinfo, **more: Any) -> dict[str, Any]:
    """An FT1 as record_transactions columns, with ``more`` (the patient and visit ids)."""

    def time(text: str) -> datetime | None:
        return parse_timestamp(text, local)

    diagnoses = []
    for r in range(1, ft1.repetitions(19) + 1):
        code = {
            name: (None if value is KEEP else value) for name, value in ft1.coded(19, repetition=r).items()
        }
        if code["code"] or code["text"]:
            diagnoses.append(code)
    performed = ft1.person(20) if ft1.sent(20) else (None, None)
    ordered = ft1.person(21) if ft1.sent(21) else (None, None)
    return {
        "transaction_id": transaction_id(ft1),
        **ft1.columns(3, {"batch_id": "3"}),
        "transaction_type": (ft1.part("6.1") or "")[:10],
        **ft1.columns(4, {"transaction_at": ("4.1", time)}),
        **ft1.columns(5, {"posted_at": ("5.1", time)}),
        **{name: (None if value is KEEP else value) for name, value in ft1.coded(7).items()},
        "quantity": parse_decimal(ft1.get("10")),
        "amount": parse_decimal(ft1.get("11.1.1")),
        "unit_amount": parse_decimal(ft1.get("12.1.1")),
        "currency": ft1.part("11.1.2") or ft1.part("12.1.2"),
        "department": ft1.part("13.2") or ft1.part("13.1"),
        **{name: (None if value is KEEP else value) for name, value in ft1.coded(25, "procedure_").items()},
        "diagnoses": diagnoses or None,
        "performed_by": performed[1] or performed[0],
        "ordered_by": ordered[1] or ordered[0],
        **more,
    }
