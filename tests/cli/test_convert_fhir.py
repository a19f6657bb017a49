"""engine/cli/convert.py: ``hl7engine convert --to fhir FILE...`` prints one FHIR Bundle per message."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle

from tests.fakes.process import ENGINE

SAMPLES = Path(__file__).parents[1] / "samples" / "fhir"


def documents(text: str) -> list[dict]:
    """The JSON documents printed one after another."""
    decoder, found, position = json.JSONDecoder(), [], 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        found.append(document)
        position = len(text) - len(text[position:].lstrip())
    return found


def test_each_message_of_each_file_is_printed_as_a_bundle(tmp_path):
    """Two files, one of them a batch of two: three Bundles, in order, each valid; exit status 0."""
    adt = (SAMPLES / "adt_a01.hl7").read_bytes()
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(
        b"BHS|^~\\&|X\r"
        + (SAMPLES / "dft_p03.hl7").read_bytes()
        + (SAMPLES / "siu_s12.hl7").read_bytes()
        + b"BTS|2\r"
    )
    (tmp_path / "adt.hl7").write_bytes(adt)
    result = subprocess.run(
        [*ENGINE, "convert", "--to", "fhir", str(tmp_path / "adt.hl7"), str(batch)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    bundles = documents(result.stdout)
    assert [bundle["entry"][-1]["resource"]["resourceType"] for bundle in bundles] == [
        "Coverage",
        "ChargeItem",
        "Patient",
    ]
    for bundle in bundles:
        Bundle.model_validate(bundle)
        assert bundle["type"] == "transaction"


def test_collection_bundles_and_unreadable_files(tmp_path):
    """--bundle-type collection has no requests; a file that is no message is named on stderr, exit 1."""
    broken = tmp_path / "broken.hl7"
    broken.write_text("PID|1||X\r")
    result = subprocess.run(
        [
            *ENGINE,
            *("convert", "--to", "fhir", "--bundle-type", "collection"),
            *(str(broken), str(SAMPLES / "oru_r01.hl7")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{broken}")
    [bundle] = documents(result.stdout)
    assert bundle["type"] == "collection"
    assert all("request" not in entry for entry in bundle["entry"])


def test_bundle_type_goes_with_fhir_only_and_output_dir_writes_json(tmp_path):
    """--bundle-type with --to xml is a usage error (exit 2); --output-dir writes <name>.<n>.json."""
    wrong = subprocess.run(
        [*ENGINE, "convert", "--to", "xml", "--bundle-type", "collection", str(SAMPLES / "adt_a01.hl7")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "--bundle-type goes with --to fhir" in wrong.stderr
    out = tmp_path / "out"
    result = subprocess.run(
        [*ENGINE, "convert", "--to", "fhir", "--output-dir", str(out), str(SAMPLES / "siu_s12.hl7")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    Bundle.model_validate(json.loads((out / "siu_s12.1.json").read_text(encoding="utf-8")))
