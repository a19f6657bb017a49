"""txHL7 (Twisted) answering every message with the ACK it builds (``HL7MessageContainer.ack()``).

The receiver is txHL7's own ``LoggingReceiver`` minus the logging of each message. The
package is installed by bench/run.py into bench/.deps (it is no dependency of the engine).
Run: ``python bench/servers/txhl7_server.py --port N``.
"""

from __future__ import annotations

import argparse

from twisted.internet import defer, endpoints, reactor
from txHL7.mllp import MLLPFactory
from txHL7.receiver import AbstractHL7Receiver


class AckReceiver(AbstractHL7Receiver):
    """Parse with python-hl7 (txHL7's default) and answer AA."""

    def handleMessage(self, message_container):
        return defer.succeed(message_container.ack())

    def getCodec(self):
        return "utf-8", "strict"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(MLLPFactory(AckReceiver()))
    reactor.run()
