"""The patient record inside the running engine: MLLP in, a `record` destination, the patient API.

The API and the FHIR export are behind the login.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from engine.config import parse_config
from engine.errors import ConfigError
from engine.hl7.ack import parse_reply
from engine.listeners.client import MLLPClient
from engine.service import Engine
from tests.fakes.harness import in_thread, statuses, wait_until
from tests.fakes.record import SAMPLES
from tests.fakes.web import USERS, basic, fetch


def config(tmp_path: Path):
    text = f"""
engine:
  data_dir: data
  http:
    endpoint: "tcp:0:interface=127.0.0.1"
    users: {{alice: "{USERS["alice"]}"}}
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: everything
    source: main
    accept: {{types: ["*"]}}
    destinations:
      - {{name: record, type: record}}
"""
    return parse_config(text, source=str(tmp_path / "channels.yaml"), base_dir=tmp_path)


def test_identity_match_and_trusted_senders_are_read_and_checked(tmp_path):
    """identity_match and trust_cross_references reach the destination; a wrong match fails at its path."""
    base = """
listeners:
  - name: main
    endpoint: "tcp:0:interface=127.0.0.1"
channels:
  - name: everything
    source: main
    accept: {types: ["*"]}
    destinations:
      - {name: record, type: record, identity_match: MATCH, trust_cross_references: [PMS, EMR]}
"""
    parsed = parse_config(base.replace("MATCH", "demographic"), source="c.yaml", base_dir=tmp_path)
    [destination] = parsed.channels[0].destinations
    assert (destination.identity_match, destination.trust_cross_references) == ("demographic", ("PMS", "EMR"))
    with pytest.raises(ConfigError, match=r"channels\[0\]\.destinations\[0\]\.identity_match"):
        parse_config(base.replace("MATCH", "loose"), source="c.yaml", base_dir=tmp_path)


@pytest_twisted.inlineCallbacks
def test_the_journey_over_mllp_ends_in_one_person_served_by_the_api(tmp_path):
    """The issue's journey sent over MLLP links PMS, EMR and lab identifiers to one person.

    The API (logged in) and the FHIR export show it.
    """
    from twisted.internet import reactor

    engine = Engine(config(tmp_path), reactor)
    engine.startService()
    try:
        payloads = [p.read_bytes() for p in sorted(SAMPLES.glob("*.hl7"))]

        def send():
            with MLLPClient("127.0.0.1", engine.listeners["main"].port, timeout=20) as client:
                return [parse_reply(client.request(p)).code for p in payloads]

        codes = yield in_thread(send)
        assert codes == ["AA"] * len(payloads)
        yield wait_until(
            lambda: statuses(engine).addCallback(
                lambda s: len(s) == len(payloads) and set(s.values()) == {"SENT"}
            )
        )

        base = f"http://127.0.0.1:{engine.web.port}"
        refused = yield in_thread(fetch, f"{base}/api/patients?identifier=PMS-100234")
        assert refused.status == 401  # patient data needs a login
        found = yield in_thread(fetch, f"{base}/api/patients?identifier=PMS-100234", headers=basic())
        assert found.status == 200
        people = found.json()["patients"]
        assert len(people) == 1
        person_id = people[0]["id"]
        detail = yield in_thread(fetch, f"{base}/api/patients/{person_id}", headers=basic())
        record = detail.json()
        authorities = {i["authority"] for i in record["identifiers"]}
        assert {"NORTHPMS", "STMARY_EMR"} <= authorities
        bundle = yield in_thread(fetch, f"{base}/fhir/Patient/{person_id}/$everything", headers=basic())
        assert bundle.status == 200 and bundle.header("content-type").startswith("application/fhir+json")
        kinds = {entry["resource"]["resourceType"] for entry in bundle.json()["entry"]}
        assert {
            "Patient",
            "Encounter",
            "Appointment",
            "Observation",
            "DiagnosticReport",
            "ChargeItem",
        } <= kinds
        worklist = yield in_thread(fetch, f"{base}/api/record/worklist")
        assert worklist.status == 401  # the operator's worklist needs a login too
        worklist = yield in_thread(fetch, f"{base}/api/record/worklist", headers=basic())
        assert worklist.status == 200 and isinstance(worklist.json()["items"], list)
        audit = yield in_thread(fetch, f"{base}/api/audit", headers=basic())
        views = [(row["user"], row["action"]) for row in audit.json()]
        assert ("alice", "patient.view") in views and ("alice", "patient.export") in views
    finally:
        yield engine.stopService()


def test_operator_finds_shows_and_unmerges_from_the_command_line(feed, store_url):
    """`hl7engine patient find/show/unmerge` work on the store.

    The merge of the journey is undone by an operator.
    """
    for path in sorted(SAMPLES.glob("*.hl7")):
        feed(path.name)
    feed.engine.dispose()

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine", "patient", *args, "--db", store_url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    found = cli("find", "--identifier", "PMS-100299")
    assert found.returncode == 0, found.stderr
    survivor = json.loads(found.stdout.splitlines()[0])
    shown = json.loads(cli("show", str(survivor["id"])).stdout)
    [merge] = shown["merges"]
    undone = cli("unmerge", str(merge["id"]), "--reason", "two different people")
    assert undone.returncode == 0, undone.stderr
    assert f"merge {merge['id']} undone" in undone.stdout
    again = cli("unmerge", str(merge["id"]), "--reason", "again")
    assert again.returncode == 1  # already undone
    restored = json.loads(cli("find", "--identifier", "PMS-100299").stdout.splitlines()[0])
    assert restored["id"] != survivor["id"]  # the prior person is active again
    bundle = json.loads(cli("show", str(survivor["id"]), "--fhir").stdout)
    assert bundle["resourceType"] == "Bundle"
