"""engine/fhirmap: v2 messages as FHIR R4 Bundles that validate and say what the messages say."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from engine.fhirmap.bundle import SEGMENT_SYSTEM, bundle_json, to_fhir_bundle
from engine.hl7.message import Message
from tests.fakes.record import corpus_messages

SAMPLES = Path(__file__).parents[1] / "samples" / "fhir"

# Required bindings the models do not check (they take any code): the R4 value sets.
STATUSES = {
    "Encounter": {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "unknown",
    },
    "ServiceRequest": {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"},
    "DiagnosticReport": {
        "registered",
        "partial",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "appended",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Observation": {
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    },
    "Appointment": {
        "proposed",
        "pending",
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
        "checked-in",
        "waitlist",
    },
    "Coverage": {"active", "cancelled", "draft", "entered-in-error"},
    "Account": {"active", "inactive", "entered-in-error", "on-hold", "unknown"},
    "ChargeItem": {"planned", "billable", "not-billable", "aborted", "billed", "entered-in-error", "unknown"},
}


def sample(name: str) -> Message:
    """A hand-written message of tests/samples/fhir."""
    return Message.parse((SAMPLES / name).read_text())


def convert(message: Message, **options) -> dict:
    """The Bundle, times without offset read in UTC."""
    return to_fhir_bundle(message, zone=UTC, **options)


def resources(bundle: dict, kind: str) -> list[dict]:
    """The resources of one type, in Bundle order."""
    return [entry["resource"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind]


def url_of(bundle: dict, kind: str) -> str:
    """The fullUrl of the one resource of a type."""
    [url] = [entry["fullUrl"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == kind]
    return url


def assert_valid(bundle: dict) -> None:
    """The Bundle and each resource validate with the R4B models; statuses bind; references resolve."""
    Bundle.model_validate(bundle)
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        get_fhir_model_class(kind).model_validate(resource)
        if kind in STATUSES:
            assert resource["status"] in STATUSES[kind], (kind, resource["status"])
        assert all(reference in full_urls for reference in _references(resource)), kind
        request = entry["request"]
        assert request["method"] in ("PUT", "POST")
        assert request["url"].split("?")[0] == kind


def _references(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [ref for item in value.values() for ref in _references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _references(item)]
    return []


@pytest.mark.parametrize(("name", "text"), corpus_messages(), ids=[name for name, _ in corpus_messages()])
def test_every_corpus_message_converts_to_a_valid_r4_bundle(name, text):
    """Each ADT, ORU, SIU and DFT corpus message gives a valid transaction Bundle, a Patient per PID."""
    message = Message.parse(text)
    bundle = convert(message)
    assert_valid(bundle)
    assert len(resources(bundle, "Patient")) == len(message.segments_named("PID"))


@pytest.mark.parametrize("name", ["adt_a01.hl7", "oru_r01.hl7", "siu_s12.hl7", "dft_p03.hl7"])
def test_every_sample_converts_to_a_valid_r4_bundle(name):
    """The hand-written samples (every mapped segment) give valid Bundles."""
    assert_valid(convert(sample(name)))


def test_pid_becomes_a_patient_with_identifiers_names_and_contacts():
    """PID: identifier systems from the authority, names by use, telecoms, birth order, time of death."""
    [patient] = resources(convert(sample("adt_a01.hl7")), "Patient")
    systems = [(item.get("system"), item["value"]) for item in patient["identifier"]]
    assert systems == [
        ("urn:oid:1.2.3.4.5", "4711"),
        ("urn:hl7engine:authority:SSA", "998877"),
        ("urn:hl7engine:authority:OLDSYS", "EXT-9"),
        ("http://hl7.org/fhir/sid/us-ssn", "123-45-6789"),
        (None, "D1234"),
    ]
    assert patient["name"] == [
        {"use": "official", "family": "Doe", "given": ["Jane", "Q"], "suffix": ["Jr"], "prefix": ["Dr"]},
        {"use": "maiden", "family": "Smith", "given": ["Jane"]},
    ]
    assert (patient["birthDate"], patient["gender"]) == ("1980-05-17", "female")
    assert patient["telecom"] == [
        {"system": "phone", "value": "+1 217 5551234", "use": "home"},
        {"system": "email", "value": "jane@example.org", "use": "home"},
        {"system": "phone", "value": "217 5559876 ext. 12", "use": "work"},
    ]
    assert patient["maritalStatus"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0002"
    assert (patient["multipleBirthInteger"], patient["deceasedDateTime"]) == (2, "2026-03-02T10:15:00+00:00")


def test_pv1_nk1_al1_dg1_in1_and_the_account_refer_to_the_patient():
    """ADT: the Encounter with its period and people, RelatedPerson, allergy, diagnosis, coverage."""
    bundle = convert(sample("adt_a01.hl7"))
    patient_url = bundle["entry"][0]["fullUrl"]
    [encounter] = resources(bundle, "Encounter")
    assert encounter["identifier"][0]["value"] == "V-77"
    assert encounter["period"] == {"start": "2026-03-01T08:15:00+01:00", "end": "2026-03-05T12:00:00+01:00"}
    assert encounter["status"] == "finished"
    assert [p["type"][0]["coding"][0]["code"] for p in encounter["participant"]] == ["ATND", "REF", "ADM"]
    assert encounter["participant"][0]["individual"] == {
        "display": "Dr Gregory House",
        "identifier": {"system": "urn:oid:2.16.840.1.113883.4.6", "value": "1234"},
    }
    assert encounter["reasonCode"][0]["text"] == "Chest pain"
    [person] = resources(bundle, "RelatedPerson")
    assert person["relationship"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0063",
        "code": "SPO",
        "display": "Spouse",
    }
    [allergy] = resources(bundle, "AllergyIntolerance")
    assert (allergy["category"], allergy["criticality"]) == (["medication"], "high")
    assert allergy["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    [condition] = resources(bundle, "Condition")
    assert condition["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "I21.9",
        "display": "Acute myocardial infarction",
    }
    [coverage] = resources(bundle, "Coverage")
    assert coverage["period"] == {"start": "2026-01-01", "end": "2026-12-31"}
    assert coverage["relationship"]["coding"][0]["code"] == "self"
    [account] = resources(bundle, "Account")
    assert account["identifier"][0]["value"] == "ACC-55"
    for resource in (encounter, condition):
        assert resource["subject"] == {"reference": patient_url}
    assert (person["patient"], allergy["patient"], coverage["beneficiary"]) == (
        {"reference": patient_url},
    ) * 3


def test_an_oru_becomes_a_report_of_its_observations_order_and_specimen():
    """OBR -> ServiceRequest and DiagnosticReport; OBX by type; NTE a note; ED the presentedForm; SPM."""
    bundle = convert(sample("oru_r01.hl7"))
    [request] = resources(bundle, "ServiceRequest")
    [report] = resources(bundle, "DiagnosticReport")
    observations = resources(bundle, "Observation")
    [specimen] = resources(bundle, "Specimen")
    assert request["status"] == "completed" and request["authoredOn"] == "2026-03-02T09:00:00-05:00"
    assert [item["value"] for item in request["identifier"]] == ["PL-1", "FL-1"]
    assert report["status"] == "final"
    assert (report["effectiveDateTime"], report["issued"]) == (
        "2026-03-02T09:30:00-05:00",
        "2026-03-02T10:00:00-05:00",
    )
    assert report["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "57021-8",
        "display": "CBC panel",
    }
    assert len(report["result"]) == len(observations) == 5
    assert report["specimen"] == [{"reference": url_of(bundle, "Specimen")}]
    assert report["presentedForm"] == [
        {"contentType": "application/pdf", "data": "SGVsbG8=", "title": "Report"}
    ]
    hemoglobin, platelets, culture, comment, when = observations
    assert hemoglobin["valueQuantity"] == {
        "value": 13.2,
        "unit": "g/dL",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    }
    assert hemoglobin["note"] == [{"text": "Sample slightly hemolysed"}]
    assert hemoglobin["performer"] == [{"display": "Central Lab"}]
    assert platelets["valueQuantity"]["comparator"] == "<"
    assert platelets["interpretation"][0]["coding"][0]["code"] == "L"
    assert culture["status"] == "preliminary"
    assert culture["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert comment["valueString"] == "first line\nsecond line"
    assert when["valueDateTime"] == "2026-03-02T09:30:00-05:00"
    assert specimen["collection"]["collectedDateTime"] == "2026-03-02T09:20:00-05:00"
    assert specimen["identifier"] == [{"system": "urn:hl7engine:id:LABSYS", "value": "SP-1"}]


@pytest.mark.parametrize(
    ("obx_statuses", "expected"),
    [("FF", "final"), ("FP", "preliminary"), ("FC", "corrected"), ("XX", "cancelled"), ("FX", "final")],
)
def test_without_obr_25_the_report_status_comes_from_the_results(obx_statuses, expected):
    """No OBR-25: any preliminary, else any corrected, else all final; cancelled results do not vote."""
    text = (SAMPLES / "oru_r01.hl7").read_text().splitlines()
    obr = next(n for n, segment in enumerate(text) if segment.startswith("OBR"))
    text[obr] = text[obr].rsplit("|", 1)[0] + "|"  # OBR-25 empty
    kept = [segment for segment in text if not segment.startswith(("OBX", "NTE", "SPM"))]
    kept[obr + 1 : obr + 1] = [
        f"OBX|{n}|NM|718-7^Hemoglobin^LN||13||||||{status}" for n, status in enumerate(obx_statuses, 1)
    ]
    [report] = resources(convert(Message.parse("\r".join(kept))), "DiagnosticReport")
    assert report["status"] == expected


def test_order_ids_carry_the_system_the_record_gives_their_namespace():
    """Placer/filler numbers: the EI namespace as urn:hl7engine:id:<namespace>, as the record exports them."""
    [request] = resources(convert(sample("oru_r01.hl7")), "ServiceRequest")
    assert [(item["system"], item["value"]) for item in request["identifier"]] == [
        ("urn:hl7engine:id:EHR", "PL-1"),
        ("urn:hl7engine:id:LABSYS", "FL-1"),
    ]


def test_an_siu_becomes_an_appointment_with_its_participants():
    """SCH with its time, AIS service, AIG/AIL/AIP and the patient as participants."""
    bundle = convert(sample("siu_s12.hl7"))
    [appointment] = resources(bundle, "Appointment")
    [patient_url] = [
        entry["fullUrl"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Patient"
    ]
    assert (appointment["status"], appointment["minutesDuration"]) == ("booked", 30)
    assert (appointment["start"], appointment["end"]) == (
        "2026-03-10T10:00:00+01:00",
        "2026-03-10T10:30:00+01:00",
    )
    assert appointment["serviceType"][0]["text"] == "Consultation"
    actors = [participant["actor"] for participant in appointment["participant"]]
    assert actors == [
        {"reference": patient_url},
        {"display": "ECG machine"},
        {"display": "CARD 101 NORTH"},
        {"display": "Gregory House", "identifier": {"value": "1234"}},
    ]


def test_an_appointment_without_a_time_takes_the_service_time_and_duration():
    """No SCH-11: AIS-4 is the start, AIS-7/8 the duration that gives the end."""
    message = sample("siu_s12.hl7")
    message.set("SCH-11", "")
    message.set("AIS-7", "2")
    message.set("AIS-8", "HR")
    [appointment] = resources(convert(message), "Appointment")
    assert (appointment["start"], appointment["end"]) == (
        "2026-03-10T10:00:00+01:00",
        "2026-03-10T12:00:00+01:00",
    )


def test_a_dft_becomes_charge_items_on_the_account():
    """FT1 -> ChargeItem: code with the transaction type, price, quantity, date, account, diagnosis."""
    bundle = convert(sample("dft_p03.hl7"))
    [charge] = resources(bundle, "ChargeItem")
    [account_url] = [
        entry["fullUrl"] for entry in bundle["entry"] if entry["resource"]["resourceType"] == "Account"
    ]
    assert [coding["code"] for coding in charge["code"]["coding"]] == ["99213", "CG"]
    assert charge["priceOverride"] == {"value": 125.5, "currency": "USD"}
    assert (charge["quantity"], charge["occurrenceDateTime"]) == ({"value": 1.0}, "2026-03-02")
    assert charge["account"] == [{"reference": account_url}]
    assert charge["reason"][0]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10"


def test_conditional_requests_use_the_business_identifier_or_the_segment():
    """Patient, Encounter, Account, Appointment: PUT Type?identifier=; others POST with ifNoneExist."""
    bundle = convert(sample("adt_a01.hl7"))
    requests = {entry["resource"]["resourceType"]: entry["request"] for entry in bundle["entry"]}
    assert requests["Patient"] == {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.3.4.5|4711"}
    assert requests["Encounter"] == {
        "method": "PUT",
        "url": "Encounter?identifier=urn:hl7engine:authority:NORTH|V-77",
    }
    assert requests["AllergyIntolerance"] == {
        "method": "POST",
        "url": "AllergyIntolerance",
        "ifNoneExist": f"identifier={SEGMENT_SYSTEM}|ADT1%5ENORTH%5EADM-7%5E7",
    }
    [allergy] = resources(bundle, "AllergyIntolerance")
    assert allergy["identifier"] == [{"system": SEGMENT_SYSTEM, "value": "ADT1^NORTH^ADM-7^7"}]


def test_search_values_are_escaped():
    """A | or , in an identifier is escaped for the search, then percent-encoded."""
    message = sample("dft_p03.hl7")
    message.set("PID-3.1", "A|B,C")
    [entry] = [entry for entry in convert(message)["entry"] if entry["resource"]["resourceType"] == "Patient"]
    assert entry["request"]["url"] == "Patient?identifier=urn:oid:1.2.3.4.5|A%5C%7CB%5C%2CC"


def test_the_same_message_gives_the_same_bundle_and_another_control_id_other_uuids():
    """fullUrls are uuid5 of sender, control id and position: stable across runs, distinct per message."""
    first, again = convert(sample("oru_r01.hl7")), convert(sample("oru_r01.hl7"))
    assert first == again
    other = sample("oru_r01.hl7")
    other.set("MSH-10", "LAB-2")
    urls = {entry["fullUrl"] for entry in first["entry"]}
    assert urls.isdisjoint(entry["fullUrl"] for entry in convert(other)["entry"])
    assert len(urls) == len(first["entry"])


def test_times_keep_their_precision_and_zone():
    """A date stays a date, a time without offset is read in the zone given, with its offset written."""
    message = sample("oru_r01.hl7")
    message.set("OBR-7", "202603020930")
    message.set("OBX-14", "2026")
    zone = timezone(timedelta(hours=2))
    [report] = resources(to_fhir_bundle(message, zone=zone), "DiagnosticReport")
    hemoglobin = resources(to_fhir_bundle(message, zone=zone), "Observation")[0]
    assert report["effectiveDateTime"] == "2026-03-02T09:30:00+02:00"
    assert hemoglobin["effectiveDateTime"] == "2026"


def test_a_collection_bundle_has_no_requests():
    """bundle_type collection: the same resources, no request elements."""
    bundle = convert(sample("adt_a01.hl7"), bundle_type="collection")
    assert bundle["type"] == "collection"
    assert all("request" not in entry for entry in bundle["entry"])
    Bundle.model_validate(bundle)
    with pytest.raises(ValueError, match="bundle_type"):
        convert(sample("adt_a01.hl7"), bundle_type="batch")


def test_bundle_json_reads_the_payload_in_its_charset():
    """The destinations' entry point: encoded bytes in (MSH-18 names the charset), UTF-8 JSON out."""
    text = (SAMPLES / "dft_p03.hl7").read_bytes().decode("ascii").replace("Doe^Jane", "Doe^Zoë")
    payload = text.replace("|2.5.1\r", "|2.5.1||||||8859/1\r", 1).encode("latin-1")
    assert '"given":["Zoë"]' in bundle_json(payload, zone=UTC).decode("utf-8")
    undeclared = text.encode("latin-1")  # not UTF-8, and MSH-18 does not say so
    assert '"given":["Zo\ufffd"]' in bundle_json(undeclared, zone=UTC).decode("utf-8")


def test_segments_outside_their_context_are_left_out():
    """No PID: nothing is about a patient, so no patient resources; unknown segments are ignored."""
    message = Message.parse("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X1|P|2.5.1\rAL1|1||X^Y\rZZZ|1\rIN1|1\r")
    assert convert(message)["entry"] == []


def test_the_diagnosis_description_is_the_condition_text():
    """DG1-4 is code.text beside DG1-3's coding; alone it is a text-only code."""
    message = sample("adt_a01.hl7")
    message.set("DG1-4", "Heart attack")
    [condition] = resources(convert(message), "Condition")
    assert (condition["code"]["text"], condition["code"]["coding"][0]["code"]) == ("Heart attack", "I21.9")
    message.set("DG1-3", "")
    [condition] = resources(convert(message), "Condition")
    assert condition["code"] == {"text": "Heart attack"}
