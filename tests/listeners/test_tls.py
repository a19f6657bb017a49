"""TLS on MLLP listeners, over real loopback sockets with a throwaway CA: server certificate, mutual TLS,
clients that do not speak TLS."""

from __future__ import annotations

import socket
import ssl

import pytest
import pytest_twisted

from engine.channels.destinations.mllp import client_tls_context
from engine.channels.destinations.spec import TlsSettings
from engine.hl7.mllp import START_BLOCK, frame
from engine.listeners.client import MLLPClient
from engine.listeners.tls import server_tls_options
from tests.fakes.certs import CertificateAuthority
from tests.fakes.harness import in_thread, wait_until
from tests.fakes.listeners import read_until_closed

MSG = b"MSH|^~\\&|LAB|NORTH|HUB|TEST|20260101120000||ORU^R01|T1|P|2.5.1\r"


@pytest.fixture
def pki(tmp_path):
    """Our CA with a server and a client certificate, and another CA with a client certificate of its own."""
    ours = CertificateAuthority(tmp_path, "ours")
    other = CertificateAuthority(tmp_path, "other")
    return {
        "ca": ours.cert_file,
        "server": ours.issue("server"),
        "client": ours.issue("client", client=True),
        "stranger": other.issue("client", client=True),
    }


def server_options(pki, *, client_ca: bool = True, require: bool = True):
    cert_file, key_file = pki["server"]
    return server_tls_options(
        cert_file=cert_file,
        key_file=key_file,
        client_ca_file=pki["ca"] if client_ca else None,
        require_client_certificate=require,
    )


def client_context(pki, identity: str | None = "client") -> ssl.SSLContext:
    cert_file, key_file = pki[identity] if identity else (None, None)
    return client_tls_context(TlsSettings(ca_file=pki["ca"], cert_file=cert_file, key_file=key_file))


def exchange(port: int, context: ssl.SSLContext) -> bytes:
    """One message over a new TLS connection; its reply."""
    with MLLPClient("127.0.0.1", port, timeout=5, tls=context) as client:
        return client.request(MSG)


@pytest_twisted.inlineCallbacks
def test_mutual_tls_serves_a_client_with_a_certificate_of_the_trusted_ca(listen, pki):
    """The right client certificate: the handshake completes and the message is answered."""
    listener = listen(tls=server_options(pki))
    reply = yield in_thread(exchange, listener.port, client_context(pki))
    assert reply == b"ACK " + MSG
    assert listener.events["tls_failed"] == 0


@pytest.mark.parametrize("identity", [None, "stranger"], ids=["no-certificate", "other-ca"])
@pytest_twisted.inlineCallbacks
def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(listen, pki, identity):
    """No client certificate, or one of another CA: no frame reaches the handler, the failure is counted."""
    listener = listen(tls=server_options(pki))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        yield in_thread(exchange, listener.port, client_context(pki, identity))
    yield wait_until(lambda: listener.events["tls_failed"] == 1, seconds=5)
    assert listener.handler.seen == []
    assert listener.open_connections == 0


@pytest_twisted.inlineCallbacks
def test_an_optional_client_certificate_may_be_absent_but_must_be_trusted_when_shown(listen, pki):
    """require_client_certificate false: no certificate is served, one of another CA is still refused."""
    listener = listen(tls=server_options(pki, require=False))
    assert (yield in_thread(exchange, listener.port, client_context(pki, None))) == b"ACK " + MSG
    with pytest.raises((ssl.SSLError, ConnectionError)):
        yield in_thread(exchange, listener.port, client_context(pki, "stranger"))
    assert listener.handler.seen == [MSG]


@pytest_twisted.inlineCallbacks
def test_a_plain_tcp_client_gets_no_answer_and_does_not_jam_the_listener(listen, pki):
    """Plain MLLP to a TLS listener is closed unanswered; a silent plain client is closed when idle;
    meanwhile TLS clients are served."""
    listener = listen(tls=server_options(pki, client_ca=False), idle_timeout=1.0)
    silent = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    talker = socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    try:
        talker.sendall(frame(MSG))
        answered = yield in_thread(read_until_closed, talker)
        served = yield in_thread(exchange, listener.port, client_context(pki, None))
        left_over = yield in_thread(read_until_closed, silent)  # closed by the idle timeout, not kept forever
    finally:
        silent.close()
        talker.close()
    assert START_BLOCK not in answered  # at most a TLS alert, never an MLLP frame
    assert served == b"ACK " + MSG
    assert left_over == b""
    assert listener.handler.seen == [MSG]  # the TLS client's only
    assert listener.events["tls_failed"] == 1


def test_a_certificate_file_may_carry_its_chain(tmp_path, pki):
    """The server certificate followed by more certificates (its chain) is read whole."""
    cert_file, key_file = pki["server"]
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(cert_file.read_bytes() + pki["ca"].read_bytes())
    options = server_tls_options(cert_file=bundle, key_file=key_file)
    assert len(options.extraCertChain) == 1
