"""The YAML shape of each destination type's settings, and of the ACK policy MLLP and HTTP share.

The channel configuration composes these (adding name, type, filters, transforms and queue), so a
problem here is reported like any other: at its YAML path, with its line. Relative paths resolve
against the configuration file's folder, passed as the validation context key ``base_dir``.
"""

from __future__ import annotations

import codecs
import re
import string
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, field_validator, model_validator

from engine.configtypes import CertificateFile, Frozen, PrivateKeyFile, Seconds, check_not_empty, resolve_path
from engine.transforms.spec import XsltSpec

__all__ = [
    "BATCH_TEMPLATE_FIELDS",
    "TEMPLATE_FIELDS",
    "AckPolicy",
    "BasicAuth",
    "ENCODING_EXTENSIONS",
    "ENCODING_MEDIA_TYPES",
    "Encoded",
    "FhirDestinationSettings",
    "FhirTimes",
    "FileSettings",
    "HttpDestinationSettings",
    "MllpSettings",
    "TlsSettings",
]

Action = Literal["sent", "retry", "error"]

ReplyBytes = Annotated[int, Field(ge=1024, le=1024**3)]


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; give an IANA name such as Europe/Berlin") from None
    return value


class FhirTimes(Frozen):
    """For a destination that writes FHIR: the zone v2 times without an offset are read in."""

    time_zone: Annotated[str, AfterValidator(_check_time_zone)] | None = None  # IANA name; None: the engine's

    @property
    def zone(self) -> tzinfo | None:
        """The zone of ``time_zone`` (None: the engine's local zone)."""
        return ZoneInfo(self.time_zone) if self.time_zone else None


class AckPolicy(Frozen):
    """What each kind of reply means for a delivery: sent, retry later, or error (fix first).

    The defaults follow the standard's meanings (docs/hl7.md §5): AE and CR say the message itself
    is wrong, so resending it unchanged would fail again; CE and AR without a content reason say
    the receiver could not take it now.
    """

    AA: Action = "sent"
    CA: Action = "sent"
    AE: Action = "error"
    CR: Action = "error"
    CE: Action = "retry"
    AR: Action | Literal["by_error_code"] = "by_error_code"
    # With AR: by_error_code, an ERR code in this list makes AR an error, any other code (or none) a retry.
    ar_error_codes: tuple[Annotated[int, Field(ge=0, le=999)], ...] = (200, 201, 202, 203)
    timeout: Action = "retry"
    mismatch: Action = "retry"  # MSA-2 is not the control id sent (MLLP also drops the connection)
    unreadable: Action = "retry"  # an empty reply, one without MSA, with an unknown MSA-1, or too long


def _check_host(value: str) -> str:
    check_not_empty(value)
    if any(char.isspace() for char in value) or "/" in value:
        raise ValueError(f"must be a host name or IP address (got {value!r})")
    return value


class TlsSettings(Frozen):
    """TLS for an MLLP destination: whom to trust, our client certificate, hostname check."""

    ca_file: CertificateFile | None = None  # PEM CA certificate(s) to trust; None: the system's trusted CAs
    cert_file: CertificateFile | None = None  # PEM client certificate (mutual TLS), with key_file
    key_file: PrivateKeyFile | None = None  # its unencrypted PEM private key
    verify_hostname: bool = True

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together (or neither)")
        return self


class MllpSettings(Frozen):
    """An MLLP destination: where to connect, how long to wait, and what each ACK means."""

    host: Annotated[str, AfterValidator(_check_host)]
    port: Annotated[int, Field(ge=1, le=65535)]
    tls: TlsSettings | None = None
    connect_timeout_seconds: Seconds = 10.0
    ack_timeout_seconds: Seconds = 30.0
    keep_alive: bool = True  # keep the connection open between messages; false: one connection per message
    max_reply_bytes: ReplyBytes = 1024 * 1024
    ack_policy: AckPolicy = Field(default_factory=AckPolicy)


# ---------------------------------------------------------------------------------------------------------
# Output encodings (file and http)

#: Each encoding (``encoding.ENCODINGS``) and the media type an HTTP destination names by default.
ENCODING_MEDIA_TYPES = {
    "er7": "application/hl7-v2",
    "xml": "application/hl7-v2+xml",
    "fhir": "application/fhir+json",
}
#: Each encoding and the extension of a file destination's default file names.
ENCODING_EXTENSIONS = {"er7": ".hl7", "xml": ".xml", "fhir": ".json"}


class Encoded(FhirTimes):
    """What a destination writes a message as: ER7 as it is, v2.xml (optionally through a stylesheet),
    or a FHIR R4 transaction Bundle (JSON, v2 times without an offset read in ``time_zone``).
    """

    encoding: Literal["er7", "xml", "fhir"] = "er7"
    # With encoding: xml, the v2.xml goes through this stylesheet: its output (any XML, or text) is sent.
    xslt: XsltSpec | None = None

    @model_validator(mode="after")
    def _keys_of_the_encoding(self) -> Encoded:
        if self.xslt is not None and self.encoding != "xml":
            raise ValueError("xslt: needs encoding: xml (the stylesheet reads the message as v2.xml)")
        if self.time_zone is not None and self.encoding != "fhir":
            raise ValueError("time_zone: needs encoding: fhir (only the FHIR Bundle reads v2 times)")
        return self


# ---------------------------------------------------------------------------------------------------------
# File

#: Placeholders of a file name template and an example value of each (used to check templates).
TEMPLATE_FIELDS: dict[str, Any] = {
    "channel": "adt",
    "destination": "archive",
    "message_id": 42,
    "delivery_id": 7,
    "control_id": "MSG00001",
    "message_type": "ADT_A01",
    "now": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
}
#: A batch file holds many messages: only the placeholders that do not name one message.
BATCH_TEMPLATE_FIELDS = frozenset({"channel", "destination", "now"})

_DEFAULT_FILENAME = "{channel}_{message_id}"
_DEFAULT_BATCH_FILENAME = "{channel}_{now:%Y%m%d%H%M%S}"


def _check_filename_template(template: str, allowed: frozenset[str] | set[str]) -> str:
    """Check a file name template: known placeholders only, valid format specs, no folders."""
    check_not_empty(template)
    if template.startswith("."):
        raise ValueError(f"must not start with '.' (hidden files are the temporary ones) (got {template!r})")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"{template!r} is not a valid template: {exc} (write {{{{ and }}}} for literal braces)"
        ) from None
    known = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS if name in allowed)
    for literal, field, spec, conversion in parts:
        if any(char in literal for char in "/\\\0"):
            raise ValueError(
                f"must be a file name, without folders (got {template!r}); put folders in directory"
            )
        if field is None:
            continue
        if field not in allowed:
            extra = " (a batch file holds many messages)" if field in TEMPLATE_FIELDS else ""
            raise ValueError(f"unknown placeholder {{{field}}}{extra}; known: {known}")
        if conversion is not None or "{" in (spec or ""):
            raise ValueError(
                f"placeholder {{{field}}}: write {{name}} or {{name:format}},"
                " without !conversions or nested fields"
            )
    try:
        example = template.format(
            **{name: value for name, value in TEMPLATE_FIELDS.items() if name in allowed}
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{template!r}: {exc}") from None
    if any(char in example for char in "/\\\0"):
        raise ValueError(f"must give a file name, without folders (got {template!r}, e.g. {example!r})")
    return template


class FileSettings(Encoded):
    """A file destination: one file per message (or per batch) in a folder, written atomically."""

    directory: Path
    batch: bool = False  # one file per dispatch round holding every due message, in an FHS/BHS envelope
    filename: str = Field(default=None, validate_default=True)  # type: ignore[assignment]
    segment_separator: Literal["cr", "lf", "crlf"] = "cr"
    on_exists: Literal["unique", "overwrite", "error"] = "unique"

    @model_validator(mode="after")
    def _batch_of_er7(self) -> FileSettings:
        if self.batch and self.encoding != "er7":
            raise ValueError(
                f"batch: true writes an HL7 batch file: it takes encoding: er7, not {self.encoding}"
            )
        return self

    @field_validator("directory")
    @classmethod
    def _resolve_directory(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("filename", mode="before")
    @classmethod
    def _default_filename(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            stem = _DEFAULT_BATCH_FILENAME if info.data.get("batch") else _DEFAULT_FILENAME
            return stem + ENCODING_EXTENSIONS[info.data.get("encoding", "er7")]
        return value

    @field_validator("filename")
    @classmethod
    def _check_filename(cls, value: str, info: ValidationInfo) -> str:
        allowed = BATCH_TEMPLATE_FIELDS if info.data.get("batch") else frozenset(TEMPLATE_FIELDS)
        return _check_filename_template(value, allowed)

    @property
    def separator(self) -> bytes:
        """The bytes written between segments."""
        return {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}[self.segment_separator]


# ---------------------------------------------------------------------------------------------------------
# HTTP

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Set from other keys (or by the HTTP client); a second value would be ambiguous.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "date", "host", "transfer-encoding", "connection"}
)


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
    if not value.isascii() or any(char.isspace() for char in value):
        raise ValueError(f"must be ASCII without spaces; percent-encode other characters (got {value!r})")
    return value


def _check_media_type(value: str) -> str:
    if not re.fullmatch(f"{_TOKEN}/{_TOKEN}", value):
        raise ValueError(
            "must be a media type without parameters, e.g. application/hl7-v2"
            f" (got {value!r}); the charset is its own key"
        )
    return value


def _check_charset(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown charset {value!r}") from None
    return value


def _check_username(value: str) -> str:
    check_not_empty(value)
    if ":" in value:
        raise ValueError("must not contain ':' (Basic authentication cannot carry it)")
    return value


class BasicAuth(Frozen):
    """HTTP Basic authentication (HL7 over HTTP security level 1; use https for level 2)."""

    username: Annotated[str, AfterValidator(_check_username)]
    password: SecretStr


class _HttpClientSettings(Frozen):
    """Where and how to POST: the URL, time allowed, credentials, extra headers, reply size."""

    url: Annotated[str, AfterValidator(_check_url)]
    timeout_seconds: Seconds = 30.0
    basic_auth: BasicAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_reply_bytes: ReplyBytes = 1024 * 1024

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(_TOKEN, name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(
                    f"header {name!r} is set by the engine; use content_type/charset for Content-Type"
                )
            if any(char in text for char in "\r\n\0"):
                raise ValueError(f"header {name!r}: the value must not contain line breaks")
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> _HttpClientSettings:
        if self.basic_auth is not None and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("give basic_auth or an Authorization header, not both")
        return self


class HttpDestinationSettings(_HttpClientSettings, Encoded):
    """An HTTP destination: POST each message, HAPI's HL7-over-HTTP way, and read the ACK in the body."""

    # ER7 or v2.xml: a FHIR server answers with no ACK (a fhir destination reads its answer).
    encoding: Literal["er7", "xml"] = "er7"
    # None: the encoding's own (application/hl7-v2, application/hl7-v2+xml).
    content_type: Annotated[str, AfterValidator(_check_media_type)] | None = None
    charset: Annotated[str, AfterValidator(_check_charset)] = "utf-8"
    ack_policy: AckPolicy = Field(default_factory=AckPolicy)

    @property
    def media_type(self) -> str:
        """The Content-Type without its charset: content_type, or the encoding's."""
        return self.content_type or ENCODING_MEDIA_TYPES[self.encoding]


class FhirDestinationSettings(_HttpClientSettings, FhirTimes):
    """A FHIR destination: POST each message as a transaction Bundle to a FHIR server's base URL."""
