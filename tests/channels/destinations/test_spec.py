"""Destination settings: defaults, relative paths, and every problem caught when the config is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.channels.destinations.spec import (
    AckPolicy,
    FhirDestinationSettings,
    FileSettings,
    HttpDestinationSettings,
    MllpSettings,
)
from tests.fakes.certs import self_signed


def problems(model, data: dict, base_dir: Path | None = None) -> list[tuple[tuple, str]]:
    """The (location, message) of every problem pydantic reports for ``data``."""
    context = {"base_dir": base_dir} if base_dir else None
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=context)
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


def test_default_ack_policy_follows_the_standard():
    """By default AA/CA are sent, AE/CR errors, CE, timeout, mismatch and unreadable retries.

    AR by ERR code 200-203.
    """
    policy = AckPolicy()
    assert policy.model_dump() == {
        "AA": "sent",
        "CA": "sent",
        "AE": "error",
        "CR": "error",
        "CE": "retry",
        "AR": "by_error_code",
        "ar_error_codes": (200, 201, 202, 203),
        "timeout": "retry",
        "mismatch": "retry",
        "unreadable": "retry",
    }


def test_ack_policy_rejects_unknown_codes_and_actions():
    """Only the known keys and sent/retry/error are taken; by_error_code only for AR."""
    found = problems(AckPolicy, {"AE": "by_error_code", "XX": "sent", "CE": "later"})
    assert {loc for loc, _ in found} == {("AE",), ("XX",), ("CE",)}


def test_mllp_defaults_and_port_range():
    """MLLP defaults: 10 s connect, 30 s ACK, kept-alive connection, no TLS; the port must be 1..65535."""
    settings = MllpSettings(host="lab.example", port=2575)
    assert (
        settings.connect_timeout_seconds,
        settings.ack_timeout_seconds,
        settings.keep_alive,
        settings.tls,
    ) == (10.0, 30.0, True, None)
    assert [loc for loc, _ in problems(MllpSettings, {"host": "lab", "port": 0})] == [("port",)]
    assert [
        loc for loc, _ in problems(MllpSettings, {"host": "a b", "port": 70000, "ack_timeout_seconds": 0})
    ] == [
        ("host",),
        ("port",),
        ("ack_timeout_seconds",),
    ]


def test_tls_files_resolve_against_the_config_folder_and_must_hold_pem(tmp_path):
    """tls paths are relative to base_dir.

    A missing file, a non-PEM file and a cert without key are reported.
    """
    self_signed(tmp_path, stem="lab")
    settings = MllpSettings.model_validate(
        {
            "host": "lab",
            "port": 1,
            "tls": {"ca_file": "lab.crt", "cert_file": "lab.crt", "key_file": "lab.key"},
        },
        context={"base_dir": tmp_path},
    )
    assert settings.tls.ca_file == tmp_path / "lab.crt"
    (tmp_path / "junk.pem").write_text("not a certificate")
    found = problems(
        MllpSettings,
        {
            "host": "lab",
            "port": 1,
            "tls": {"ca_file": "missing.crt", "cert_file": "junk.pem", "key_file": "lab.crt"},
        },
        tmp_path,
    )
    assert [loc for loc, _ in found] == [("tls", "ca_file"), ("tls", "cert_file"), ("tls", "key_file")]
    assert (
        "cannot read" in found[0][1] and "PEM certificate" in found[1][1] and "PEM private key" in found[2][1]
    )
    alone = problems(MllpSettings, {"host": "lab", "port": 1, "tls": {"cert_file": "lab.crt"}}, tmp_path)
    assert "together" in alone[0][1]


def test_file_directory_resolves_against_the_config_folder(tmp_path):
    """A relative directory counts from base_dir (the configuration file's folder).

    An absolute one is kept.
    """
    relative = FileSettings.model_validate({"directory": "out/adt"}, context={"base_dir": tmp_path})
    absolute = FileSettings.model_validate({"directory": "/var/hl7"}, context={"base_dir": tmp_path})
    assert (relative.directory, absolute.directory) == (tmp_path / "out" / "adt", Path("/var/hl7"))


def test_file_defaults_depend_on_batch(tmp_path):
    """Without a filename, one message is named by channel and message id, a batch by channel and time."""
    assert FileSettings(directory=tmp_path).filename == "{channel}_{message_id}.hl7"
    assert FileSettings(directory=tmp_path, batch=True).filename == "{channel}_{now:%Y%m%d%H%M%S}.hl7"
    settings = FileSettings(directory=tmp_path)
    assert (settings.segment_separator, settings.on_exists, settings.separator) == ("cr", "unique", b"\r")


@pytest.mark.parametrize(
    ("template", "batch", "message"),
    [
        ("{patient}.hl7", False, "unknown placeholder {patient}"),
        ("{message_id}.hl7", True, "a batch file holds many messages"),
        ("{now:%Y/%m}.hl7", False, "without folders"),
        ("out/{message_id}.hl7", False, "without folders"),
        ("{message_id!r}.hl7", False, "without !conversions"),
        ("{message_id:%Y}.hl7", False, "Invalid format specifier"),
        ("{message_id.real}.hl7", False, "unknown placeholder"),
        ("{message_id", False, "not a valid template"),
        (".{message_id}", False, "must not start with '.'"),
        ("", False, "must not be empty"),
    ],
)
def test_bad_filename_templates_are_config_errors(tmp_path, template, batch, message):
    """Unknown placeholders, per-message ones in a batch, folders.

    Conversions and bad format specs fail at load time.
    """
    found = problems(FileSettings, {"directory": str(tmp_path), "filename": template, "batch": batch})
    assert [loc for loc, _ in found] == [("filename",)]
    assert message in found[0][1]


def test_http_defaults():
    """HTTP defaults: ER7 as application/hl7-v2 in UTF-8, 30 s timeout, no authentication; XML as +xml."""
    settings = HttpDestinationSettings(url="https://lab.example/hl7/ADT")
    xml = HttpDestinationSettings(url="https://lab.example/hl7/ADT", encoding="xml")
    assert (xml.media_type, settings.encoding) == ("application/hl7-v2+xml", "er7")
    assert (settings.media_type, settings.charset, settings.timeout_seconds, settings.basic_auth) == (
        "application/hl7-v2",
        "utf-8",
        30.0,
        None,
    )


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"url": "ftp://lab/x"}, ("url",)),
        ({"url": "http:///nohost"}, ("url",)),
        ({"url": "http://lab/ä"}, ("url",)),
        ({"url": "http://lab/", "content_type": "application/hl7-v2; charset=utf-8"}, ("content_type",)),
        ({"url": "http://lab/", "charset": "klingon"}, ("charset",)),
        ({"url": "http://lab/", "headers": {"Content-Type": "text/plain"}}, ("headers",)),
        ({"url": "http://lab/", "headers": {"X-A": "a\r\nInjected: 1"}}, ("headers",)),
        (
            {
                "url": "http://lab/",
                "headers": {"Authorization": "Bearer x"},
                "basic_auth": {"username": "u", "password": "p"},
            },
            (),
        ),
        (
            {"url": "http://lab/", "basic_auth": {"username": "a:b", "password": "p"}},
            ("basic_auth", "username"),
        ),
    ],
)
def test_bad_http_settings_are_config_errors(data, where):
    """Non-http URLs, parameters in content_type, unknown charsets.

    Engine-set or broken headers and double auth fail.
    """
    assert [loc for loc, _ in problems(HttpDestinationSettings, data)] == [where]


def test_the_password_is_not_shown():
    """The Basic auth password never appears in the settings' repr (logs, error messages)."""
    settings = HttpDestinationSettings(
        url="http://lab/", basic_auth={"username": "hub", "password": "s3cret"}
    )
    assert "s3cret" not in repr(settings)
    assert settings.basic_auth.password.get_secret_value() == "s3cret"


def test_fhir_settings_share_the_http_keys_and_read_the_time_zone():
    """A fhir destination: url, timeout, auth and headers as for http; time_zone an IANA zone."""
    settings = FhirDestinationSettings(
        url="https://fhir.example/r4", headers={"X-Tenant": "north"}, time_zone="Europe/Berlin"
    )
    assert (settings.timeout_seconds, settings.headers, str(settings.zone)) == (
        30.0,
        {"X-Tenant": "north"},
        "Europe/Berlin",
    )
    assert FhirDestinationSettings(url="http://fhir/").zone is None


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"url": "fhir.example/r4"}, ("url",)),
        ({"url": "http://fhir/", "time_zone": "Mars/Olympus"}, ("time_zone",)),
        ({"url": "http://fhir/", "headers": {"Content-Type": "application/json"}}, ("headers",)),
        ({"url": "http://fhir/", "ack_policy": {"AE": "retry"}}, ("ack_policy",)),
    ],
)
def test_bad_fhir_settings_are_config_errors(data, where):
    """Not a URL, an unknown zone, an engine-set header, a key of the http destination only."""
    assert [loc for loc, _ in problems(FhirDestinationSettings, data)] == [where]


def test_file_encoding_fhir_names_files_json_by_default(tmp_path):
    """encoding: fhir changes the default file name's extension; er7 keeps .hl7."""
    assert FileSettings(directory=tmp_path, encoding="fhir").filename == "{channel}_{message_id}.json"
    assert FileSettings(directory=tmp_path).filename == "{channel}_{message_id}.hl7"
    found = problems(FileSettings, {"directory": str(tmp_path), "encoding": "pdf"})
    assert [loc for loc, _ in found] == [("encoding",)]
