"""Fresh corpus messages for every test (transforms change them in place)."""

from __future__ import annotations

import pytest

from engine.hl7.message import Message
from tests.transforms.messages import (
    A24_ODD_DELIMITERS,
    ADT_A01,
    ORU_R01,
    corpus_message,
)


@pytest.fixture
def adt() -> Message:
    """The ADT^A01 corpus message."""
    return corpus_message(ADT_A01)


@pytest.fixture
def oru() -> Message:
    """The ORU^R01 corpus message."""
    return corpus_message(ORU_R01)


@pytest.fixture
def odd() -> Message:
    """The ADT^A24 corpus message with non-default delimiters."""
    return corpus_message(A24_ODD_DELIMITERS)
