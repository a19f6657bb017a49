"""Orders, results, appointments and charges of a v2 message as FHIR R4 resources (part of ``bundle``).

ORC/OBR -> ServiceRequest (and, in results messages, DiagnosticReport); OBX -> Observation;
SPM -> Specimen; SCH with TQ1/AIS/AIG/AIL/AIP -> Appointment; FT1 -> ChargeItem.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.fhirmap.common import (
    APPOINTMENT_STATUS,
    OBSERVATION_STATUS,
    REQUEST_STATUS,
    TRANSACTION_TYPES,
    attachment,
    compact,
    concept,
    observation_value,
    report_status,
)
from engine.fhirmap.reading import (
    Field,
    coded,
    entity_identifier,
    entity_system,
    fhir_datetime,
    fhir_instant,
    identifier,
    person_reference,
)
from engine.hl7.message import Segment, unescape

if TYPE_CHECKING:
    from engine.fhirmap.bundle import MessageMapper

__all__ = ["ORDER_MAPPERS"]

#: Messages whose OBR segments report results (a DiagnosticReport besides the ServiceRequest).
_RESULT_MESSAGES = frozenset({"ORU", "OUL", "MDM"})
_ORDER_STATUS = {"CM": "completed", "CA": "revoked", "DC": "revoked", "HD": "on-hold", "IP": "active"}
_EVENT_STATUS = {"S15": "cancelled", "S17": "entered-in-error", "S26": "noshow"}
_MINUTES = {"MIN": 1, "S": 1 / 60, "H": 60, "HR": 60, "D": 1440}
_CODED_TYPES = frozenset({"CE", "CWE", "CNE", "CF"})


def _orc(m: MessageMapper, index: int, orc: Segment) -> None:
    """ORC: kept for the OBR that follows (its numbers, status, orderer and time)."""
    m.orc = orc


def _obr(m: MessageMapper, index: int, obr: Segment) -> None:
    """OBR (with the ORC before it) -> ServiceRequest; in results messages also DiagnosticReport."""
    orc = m.orc
    m.orc = None
    if m.patient is None:
        m.order = m.noted = None
        return

    def number(n: int) -> Field:
        own = m.first(obr, n)
        return own if own or orc is None else m.first(orc, n)

    placer, filler = entity_identifier(number(2), "PLAC"), entity_identifier(number(3), "FILL")
    code = coded(m.first(obr, 4)) or {"text": "Order"}
    result_status = m.first(obr, 25)(1)
    order_status = m.first(orc, 5)(1) if orc is not None else ""
    request = {
        "resourceType": "ServiceRequest",
        "identifier": [placer, filler],
        "status": _ORDER_STATUS.get(order_status) or REQUEST_STATUS.get(result_status, "active"),
        "intent": "order",
        "code": code,
        "subject": m.ref(m.patient),
        "encounter": m.ref(m.encounter),
        "authoredOn": m.when(orc, 9) if orc is not None else None,
        "requester": person_reference(m.first(obr, 16))
        or (person_reference(m.first(orc, 12)) if orc is not None else None),
        "reasonCode": [coded(item) for item in m.fields(obr, 31)],
        "priority": "stat" if m.first(obr, 5)(1) == "S" else None,
    }
    request_url = m.add(index, request)
    order = {
        "request": request_url,
        "report": None,
        "observed": m.when(obr, 7),
        "result_status": result_status,
        "result_statuses": [],  # OBX-11 of its results
    }
    if m.message_code in _RESULT_MESSAGES:
        report = {
            "resourceType": "DiagnosticReport",
            "identifier": [filler] if filler else [],
            "basedOn": [m.ref(request_url)],
            "status": report_status(result_status, ()),  # without OBR-25, from its OBX (below)
            "category": [coded(m.first(obr, 24), "HL70074")],
            "code": code,
            "subject": m.ref(m.patient),
            "encounter": m.ref(m.encounter),
            "effectiveDateTime": order["observed"],
            "issued": fhir_instant(m.first(obr, 22)(1), m.zone),
            "resultsInterpreter": [],
            "result": [],
            "specimen": [],
        }
        m.add(index, report)
        order["report"] = report
    m.order = order
    m.noted = request


def _obx(m: MessageMapper, index: int, obx: Segment) -> None:
    """OBX -> Observation (an ED value -> the report's presentedForm instead)."""
    order = m.order or {}
    report = order.get("report")
    values = _obx_values(m, obx)
    if report is not None and not order["result_status"]:  # without OBR-25 its results give the status
        order["result_statuses"].append(m.first(obx, 11)(1))
        report["status"] = report_status("", order["result_statuses"])
    if values["value_type"] == "ED":
        if report is not None and values["value"]:
            report.setdefault("presentedForm", []).append(attachment(values))
        return
    observation = {
        "resourceType": "Observation",
        "identifier": [entity_identifier(m.first(obx, 21))],
        "basedOn": [m.ref(order.get("request"))],
        "status": OBSERVATION_STATUS.get(m.first(obx, 11)(1), "unknown"),
        "code": coded(m.first(obx, 3)) or {"text": "Observation"},
        "subject": m.ref(m.patient),
        "encounter": m.ref(m.encounter),
        "effectiveDateTime": m.when(obx, 14) or order.get("observed"),
        "referenceRange": [{"text": values["reference_range"]}] if values["reference_range"] else [],
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": flag,
                    }
                ]
            }
            for flag in (item(1) for item in m.fields(obx, 8))
            if flag
        ],
        "method": coded(m.first(obx, 17)),
        "performer": [person_reference(item) for item in m.fields(obx, 16)]
        + ([{"display": m.first(obx, 23)(1)}] if m.first(obx, 23)(1) else []),
    }
    observation.update(observation_value(values))
    units = m.first(obx, 6)
    if "valueQuantity" in observation and units(3).upper() in ("UCUM", "ANS+"):
        observation["valueQuantity"].update(system="http://unitsofmeasure.org", code=units(1) or None)
    url = m.add(index, observation)
    if report is not None:
        report["result"].append(m.ref(url))
    m.noted = observation


def _obx_values(m: MessageMapper, obx: Segment) -> dict:
    """An OBX read into the shape ``observation_value`` and ``attachment`` take."""
    kind = m.first(obx, 2)(1).upper()
    value = m.first(obx, 5)
    units = m.first(obx, 6)
    values = {
        "value_type": kind,
        "value": None,
        "numeric_value": None,
        "numeric_high": None,
        "comparator": None,
        "separator": None,
        "coded_code": None,
        "coded_text": None,
        "coded_system": None,
        "units": units(1) or units(2) or None,
        "reference_range": m.first(obx, 7)(1) or None,
        "media_type": None,
        "encoding": None,
        "text": m.first(obx, 3)(2) or None,
    }
    if kind == "NM":
        values["value"] = value(1) or None
        values["numeric_value"] = _number(value(1))
    elif kind == "SN":
        values.update(
            comparator=value(1) or None,
            numeric_value=_number(value(2)),
            separator=value(3) or None,
            numeric_high=_number(value(4)),
            value="".join(value(c) for c in (1, 2, 3, 4)) or None,
        )
    elif kind in _CODED_TYPES:
        values.update(coded_code=value(1) or None, coded_text=value(2) or None, coded_system=value(3) or None)
        values["value"] = value(2) or value(1) or None
    elif kind == "ED":
        media = "/".join(part for part in (value(2), value(3)) if part)
        values.update(media_type=media.lower() or None, encoding=value(4), value=value(5) or None)
    elif kind in ("DT", "TS", "DTM"):
        values["value"] = fhir_datetime(value(1), m.zone) or value(1) or None
    else:
        delimiters = m.message.delimiters
        lines = [unescape(part, delimiters).strip() for part in obx.field(5).split(delimiters.repetition)]
        values["value"] = "\n".join(line for line in lines if line and line != '""') or None
    return values


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _spm(m: MessageMapper, index: int, spm: Segment) -> None:
    """SPM -> Specimen (the report's specimen)."""
    ids = m.first(spm, 2)
    identifiers = [
        compact({"system": _namespace_system(ids, component), "value": ids(component, 1)})
        for component in (1, 2)
        if ids(component, 1)
    ]
    collected = m.first(spm, 17)
    start, end = (fhir_datetime(collected(n), m.zone) for n in (1, 2))
    collection = (
        {"collectedPeriod": {"start": start, "end": end}} if start and end else {"collectedDateTime": start}
    )
    quantity = m.first(spm, 12)
    order = m.order or {}
    specimen = {
        "resourceType": "Specimen",
        "identifier": identifiers,
        "type": coded(m.first(spm, 4), "HL70487"),
        "subject": m.ref(m.patient),
        "request": [m.ref(order.get("request"))],
        "receivedTime": m.when(spm, 18),
        "collection": {
            **collection,
            "method": coded(m.first(spm, 7), "HL70488"),
            "bodySite": coded(m.first(spm, 8)),
            "quantity": {"value": _number(quantity(1)), "unit": quantity(2, 1) or None}
            if _number(quantity(1)) is not None
            else None,
        },
    }
    url = m.add(index, specimen)
    report = order.get("report")
    if report is not None:
        report["specimen"].append(m.ref(url))


def _namespace_system(ids: Field, component: int) -> str | None:
    return entity_system(ids(component, 2), ids(component, 3), ids(component, 4))


# ------------------------------------------------------------------------------------------ SIU


def _sch(m: MessageMapper, index: int, sch: Segment) -> None:
    """SCH -> Appointment (participants from PID, AIS, AIG, AIL, AIP)."""
    status_code = m.first(sch, 25)(1).lower()
    status = APPOINTMENT_STATUS.get(status_code) or _EVENT_STATUS.get(m.event, "booked")
    timing = m.first(sch, 11)
    appointment = {
        "resourceType": "Appointment",
        "identifier": [
            entity_identifier(m.first(sch, 2), "FILL"),
            entity_identifier(m.first(sch, 1), "PLAC"),
        ],
        "status": status,
        "appointmentType": coded(m.first(sch, 8), "HL70277"),
        "reasonCode": [coded(m.first(sch, 7))],
        "serviceType": [],
        "start": fhir_instant(timing(4), m.zone),
        "end": fhir_instant(timing(5), m.zone),
        "participant": [],
        "comment": m.first(sch, 6)(2) or m.first(sch, 6)(1) or None,
    }
    _duration(appointment, m.first(sch, 9)(1), m.first(sch, 10)(1))
    m.add(index, appointment)
    m.appointment = appointment


def _duration(appointment: dict, amount: str, units: str) -> None:
    """Set minutesDuration (and end from start) from an amount and its units (minutes by default)."""
    number = _number(amount)
    if number is None or number <= 0:
        return
    minutes = round(number * _MINUTES.get(units.upper(), 1))
    appointment["minutesDuration"] = minutes
    if appointment.get("start") and not appointment.get("end"):
        end = datetime.fromisoformat(appointment["start"]) + timedelta(minutes=minutes)
        appointment["end"] = end.isoformat()


def _tq1(m: MessageMapper, index: int, tq1: Segment) -> None:
    """TQ1-7/8 -> the Appointment's start and end when SCH gave none."""
    if m.appointment is not None and not m.appointment["start"]:
        m.appointment["start"] = fhir_instant(m.first(tq1, 7)(1), m.zone)
        m.appointment["end"] = fhir_instant(m.first(tq1, 8)(1), m.zone)


def _ais(m: MessageMapper, index: int, ais: Segment) -> None:
    """AIS -> the Appointment's serviceType, and its time when SCH gave none."""
    appointment = m.appointment
    if appointment is None:
        return
    service = coded(m.first(ais, 3))
    if service:
        appointment["serviceType"].append(service)
    if not appointment["start"]:
        appointment["start"] = fhir_instant(m.first(ais, 4)(1), m.zone)
        _duration(appointment, m.first(ais, 7)(1), m.first(ais, 8)(1))


def _participant(m: MessageMapper, actor: dict | None, role: dict | None) -> None:
    if m.appointment is not None and (actor or role):
        m.appointment["participant"].append(
            compact({"actor": actor, "type": [role] if role else [], "status": "accepted"})
        )


def _aig(m: MessageMapper, index: int, aig: Segment) -> None:
    """AIG -> an Appointment participant (a general resource, by name)."""
    resource = m.first(aig, 3)
    name = resource(2) or resource(1)
    _participant(m, {"display": name} if name else None, coded(m.first(aig, 4)))


def _ail(m: MessageMapper, index: int, ail: Segment) -> None:
    """AIL -> an Appointment participant (a location, by name)."""
    place = m.first(ail, 3)
    name = " ".join(part for part in (place(1), place(2), place(3), place(4)) if part)
    _participant(m, {"display": name} if name else None, coded(m.first(ail, 4)))


def _aip(m: MessageMapper, index: int, aip: Segment) -> None:
    """AIP -> an Appointment participant (a person, by name and identifier)."""
    _participant(m, person_reference(m.first(aip, 3)), coded(m.first(aip, 4)))


# ------------------------------------------------------------------------------------------ DFT


def _ft1(m: MessageMapper, index: int, ft1: Segment) -> None:
    """FT1 -> ChargeItem (on the Account of PID-18)."""
    if m.patient is None:
        return
    kind = m.first(ft1, 6)(1)
    type_coding = (
        [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v2-0017",
                "code": kind,
                "display": TRANSACTION_TYPES.get(kind),
            }
        ]
        if kind
        else []
    )
    code = coded(m.first(ft1, 7))
    if code is not None:
        code.setdefault("coding", []).extend(compact(type_coding))
    else:
        code = concept(kind or None, TRANSACTION_TYPES.get(kind, "Transaction"), "HL70017")
    price = m.first(ft1, 11)
    amount = _number(price(1, 1))
    period = m.first(ft1, 4)
    start, end = (fhir_datetime(period(n), m.zone) for n in (1, 2))
    charge = {
        "resourceType": "ChargeItem",
        "identifier": [identifier(m.first(ft1, 2))],
        "status": "billable",
        "code": code,
        "subject": m.ref(m.patient),
        "context": m.ref(m.encounter),
        "account": [m.ref(m.account)],
        "enteredDate": m.when(ft1, 5),
        "quantity": {"value": _number(m.first(ft1, 10)(1))}
        if _number(m.first(ft1, 10)(1)) is not None
        else None,
        "priceOverride": {"value": amount, "currency": price(1, 2) or None} if amount is not None else None,
        "performer": [{"actor": actor} for actor in map(person_reference, m.fields(ft1, 20)) if actor],
        "reason": [coded(item) for item in m.fields(ft1, 19)],
    }
    if start and end and start != end:
        charge["occurrencePeriod"] = {"start": start, "end": end}
    else:
        charge["occurrenceDateTime"] = start
    m.add(index, charge)


ORDER_MAPPERS: dict[str, Callable[[MessageMapper, int, Segment], None]] = {
    "ORC": _orc,
    "OBR": _obr,
    "OBX": _obx,
    "SPM": _spm,
    "SCH": _sch,
    "TQ1": _tq1,
    "AIS": _ais,
    "AIG": _aig,
    "AIL": _ail,
    "AIP": _aip,
    "FT1": _ft1,
}
