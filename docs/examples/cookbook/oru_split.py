"""Split an ORU^R01 by order: each function keeps the header segments and one order group.

Used by the cookbook's "Split an ORU by OBR" recipe (docs/cookbook.md): one destination per
position, each with a filter that skips it when the message has no such order.
"""

from engine.hl7.message import Message

#: Segments that open an order group (ORU^R01 ORDER_OBSERVATION: [ORC] OBR {NTE} {OBX {NTE}}).
_OPENERS = {"ORC", "OBR"}


def _keep_order(message: Message, position: int) -> Message:
    """The message with only its ``position``-th order group (from 1); MSH-10 gets ``-position``."""
    header: list[str] = []
    groups: list[list[str]] = []
    previous = ""
    for segment in message.segments:
        opens = segment.name in _OPENERS and not (segment.name == "OBR" and previous == "ORC")
        if opens:
            groups.append([])
        (groups[-1] if groups else header).append(segment.raw)
        previous = segment.name
    if position > len(groups):
        raise ValueError(f"the message has {len(groups)} order(s), not {position}")
    split = Message(message.delimiters, header + groups[position - 1])
    split.set("MSH-10", f"{message.get('MSH-10')}-{position}")
    split.set("OBR-1", "1")
    return split


def first_order(message: Message) -> Message:
    """The message with its first order group only."""
    return _keep_order(message, 1)


def second_order(message: Message) -> Message:
    """The message with its second order group only."""
    return _keep_order(message, 2)


def third_order(message: Message) -> Message:
    """The message with its third order group only."""
    return _keep_order(message, 3)
