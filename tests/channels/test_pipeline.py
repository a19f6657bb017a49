"""engine.channels.pipeline: a channel's and each destination's stages as one pure function."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.channels.pipeline import DestinationStages, Pipeline
from engine.errors import TransformError
from engine.hl7.message import Message
from engine.model import NewDelivery, ProcessingResult, ReceivedMessage, Status

ADT = "MSH|^~\\&|PMS|CLINIC|HUB|TEST|20260101120000||ADT^A04^ADT_A01|C0001|P|2.5.1\rPID|1||7^^^PMS^MR\r"


class Only:
    """A filter passing messages whose ``path`` holds ``value``."""

    def __init__(self, path: str, value: str):
        self.name = f"only {path}={value}"
        self.path, self.value = path, value

    def check(self, message: Message) -> str | None:
        return None if message.get(self.path) == self.value else f"{self.path} is not {self.value}"


class Put:
    """A transform setting ``path`` to ``value`` (or failing, with value None)."""

    def __init__(self, path: str, value: str | None):
        self.name = f"put {path}"
        self.path, self.value = path, value

    def apply(self, message: Message) -> Message:
        if self.value is None:
            raise TransformError(f"{self.name}: cannot")
        message.set(self.path, self.value)
        return message


def test_a_channel_without_stages_or_destinations_leaves_the_message_transformed_as_it_is():
    """No stages, no destinations: TRANSFORMED, nothing transformed kept, no deliveries."""
    assert Pipeline().process_text(7, ADT, "utf-8", "C0001") == ProcessingResult(7, Status.TRANSFORMED)


def test_a_channel_filter_filters_the_message_with_its_reason():
    """A channel filter that does not pass the message makes it FILTERED, with the filter's reason.

    And no deliveries.
    """
    pipeline = Pipeline([Only("MSH-3", "EMR")], destinations=[DestinationStages("lab")])
    assert pipeline.process_text(7, ADT, "utf-8", "C0001") == ProcessingResult(
        7, Status.FILTERED, reason="MSH-3 is not EMR"
    )


def test_a_failing_transform_puts_the_message_in_error():
    """A transform raising TransformError makes the message ERROR with its text."""
    pipeline = Pipeline(transforms=[Put("PV1-3", None)], destinations=[DestinationStages("lab")])
    assert pipeline.process_text(7, ADT, "utf-8", "C0001") == ProcessingResult(
        7, Status.ERROR, reason="put PV1-3: cannot"
    )


def test_each_destination_gets_its_own_copy_after_the_channels_transforms():
    """Channel transforms reach every destination; one destination's transform is not seen by the next."""
    pipeline = Pipeline(
        transforms=[Put("MSH-5", "EMR")],
        destinations=[
            DestinationStages("lab", transforms=[Put("MSH-10", "LAB-1")]),
            DestinationStages("archive"),
        ],
    )
    result = pipeline.process_text(7, ADT, "utf-8", "C0001")
    channel_text = ADT.replace("|HUB|", "|EMR|")
    assert result.status == Status.QUEUED and result.transformed == channel_text.rstrip("\r").encode()
    assert result.deliveries == (
        NewDelivery("lab", Status.QUEUED, "LAB-1", channel_text.replace("|C0001|", "|LAB-1|").encode()),
        NewDelivery("archive", Status.QUEUED, "C0001", channel_text.encode()),
    )


def test_a_destination_filter_or_error_settles_only_that_delivery():
    """A destination filter makes its delivery FILTERED, a failing destination transform its delivery ERROR.

    The message rolls up.
    """
    pipeline = Pipeline(
        destinations=[
            DestinationStages("lab", filters=[Only("MSH-3", "EMR")]),
            DestinationStages("billing", transforms=[Put("PV1-2", None)]),
        ]
    )
    result = pipeline.process_text(7, ADT, "utf-8", "C0001")
    assert result == ProcessingResult(
        7,
        Status.ERROR,
        reason="lab: MSH-3 is not EMR; billing: put PV1-2: cannot",
        deliveries=(
            NewDelivery("lab", Status.FILTERED, "C0001", None, "MSH-3 is not EMR"),
            NewDelivery("billing", Status.ERROR, "C0001", None, "put PV1-2: cannot"),
        ),
    )


def test_destinations_without_stages_send_the_segments_cr_separated_or_the_message_is_in_error():
    """Without stages a message is still read: blank lines and LF go, one not starting with MSH is ERROR."""
    pipeline = Pipeline(destinations=[DestinationStages("lab"), DestinationStages("archive")])
    result = pipeline.process_text(7, ADT.replace("\r", "\n\n"), "utf-8", "C0001")
    assert result == ProcessingResult(
        7,
        Status.QUEUED,
        deliveries=(
            NewDelivery("lab", Status.QUEUED, "C0001", ADT.encode()),
            NewDelivery("archive", Status.QUEUED, "C0001", ADT.encode()),
        ),
    )
    assert pipeline.process_text(8, " " + ADT, "utf-8", "C0001") == ProcessingResult(
        8, Status.ERROR, reason="no MSH segment at the start of the message"
    )


def test_a_stored_message_is_decoded_by_its_charset_and_encoded_back():
    """process() decodes the stored bytes by MSH-18 and the deliveries carry the same encoding."""
    text = ADT.replace("|2.5.1\r", "|2.5.1|||||8859/1\r").replace("DOE^JOHN", "MÜLLER^JÖRG")
    row = ReceivedMessage(
        7,
        "adt",
        text.encode("latin-1"),
        "8859/1",
        "C0001",
        datetime(2026, 1, 1, tzinfo=UTC),
        "PMS",
        "CLINIC",
        "ADT",
        "A04",
    )
    result = Pipeline(destinations=[DestinationStages("lab")]).process(row)
    assert result.deliveries[0].payload == text.encode("latin-1")
