"""Building blocks of configuration models, shared by engine.config and the stage specs it includes.

Stage modules (filters, transforms, destinations) declare their own YAML shape with these, so a
problem in any of them is reported like any other: at its YAML path, with its line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

__all__ = [
    "CertificateFile",
    "Frozen",
    "HL7Text",
    "Name",
    "PrivateKeyFile",
    "Seconds",
    "check_not_empty",
    "check_version",
    "resolve_path",
]


def _check_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"must be letters, digits, '_', '.' or '-' (got {value!r})")
    return value


def check_not_empty(value: str | tuple) -> str | tuple:
    # Unlike Field(min_length=1), an AfterValidator does not run when items failed: no follow-on error.
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_hl7_text(value: str) -> str:
    check_not_empty(value)
    if any(char in value for char in "|^~\\&\r\n"):
        raise ValueError(f"must not contain HL7 delimiters | ^ ~ \\ & or line breaks (got {value!r})")
    return value


def check_version(value: str) -> str:
    """An HL7 v2 version as written in MSH-12 (2.3.1, 2.5.1)."""
    if not re.fullmatch(r"2\.\d+(\.\d+)?", value):
        raise ValueError(f"must be an HL7 v2 version such as 2.3.1 or 2.5.1 (got {value!r})")
    return value


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """An absolute path: relative ones count from the configuration file's folder (context ``base_dir``)."""
    base_dir = (info.context or {}).get("base_dir", Path("."))
    return Path(os.path.abspath(Path(base_dir) / value))


def _check_certificates(value: Path, info: ValidationInfo) -> Path:
    from cryptography import x509  # here: only a config with TLS pays for importing it

    path = resolve_path(value, info)
    try:
        x509.load_pem_x509_certificates(path.read_bytes())  # ValueError when there is none
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a PEM certificate ({exc})") from None
    return path


def _check_private_key(value: Path, info: ValidationInfo) -> Path:
    from cryptography.hazmat.primitives import serialization  # here: only a config with TLS imports it

    path = resolve_path(value, info)
    try:
        serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except TypeError:  # cryptography's way of saying the key is encrypted
        raise ValueError(f"{path}: the private key is encrypted; give an unencrypted PEM key") from None
    except ValueError as exc:
        raise ValueError(f"{path} does not hold a PEM private key ({exc})") from None
    return path


Name = Annotated[str, AfterValidator(_check_name)]
HL7Text = Annotated[str, AfterValidator(_check_hl7_text)]
Seconds = Annotated[float, Field(gt=0)]
#: A PEM file of one or more certificates, relative to the configuration file's folder; read when loaded.
CertificateFile = Annotated[Path, AfterValidator(_check_certificates)]
#: A PEM file of an unencrypted private key, relative to the configuration file's folder; read when loaded.
PrivateKeyFile = Annotated[Path, AfterValidator(_check_private_key)]


class Frozen(BaseModel):
    """Base of every configuration model: immutable, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
