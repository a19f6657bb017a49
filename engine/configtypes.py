"""Building blocks of configuration models, shared by engine.config and the stage specs it includes.

Stage modules (filters, transforms, destinations) declare their own YAML shape with these, so a
problem in any of them is reported like any other: at its YAML path, with its line.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["Frozen", "HL7Text", "Name", "Seconds", "check_not_empty"]


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


Name = Annotated[str, AfterValidator(_check_name)]
HL7Text = Annotated[str, AfterValidator(_check_hl7_text)]
Seconds = Annotated[float, Field(gt=0)]


class Frozen(BaseModel):
    """Base of every configuration model: immutable, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
