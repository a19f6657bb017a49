"""A channel to try stored messages on, for the web tests: ``try`` actions for ``start_web``."""

from __future__ import annotations

from engine.channels.trial import try_message
from engine.web.trying import TryApi
from tests.fakes.config import parse

#: Channel ``adt`` on listener ``main`` takes the PMS's ADT (tests.fakes.messages.pms_message) and
#: sets MSH-5 for its EMR destination.
CONFIG = parse("""
listeners:
  - {name: main, endpoint: "tcp:21330:interface=127.0.0.1"}
channels:
  - name: adt
    source: main
    accept: {types: [ADT], senders: [{application: PMS}]}
    transforms: [{set: {field: MSH-5, value: EMR}}]
    destinations: [{name: emr, type: file, directory: out/emr}]
  - {name: other, source: main, accept: {types: [ORU]}}
""")


def try_actions() -> dict:
    """``message_actions`` for start_web: ``try`` on CONFIG."""
    return {b"try": lambda message: TryApi(message, lambda channel, raw: try_message(CONFIG, channel, raw))}
