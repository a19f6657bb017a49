"""TLS for MLLP listeners: the server's certificate, and optionally the CA its clients' certificates need.

TLS is layered on whatever stream endpoint the listener has (``tcp:``, ``tcp6:``, ``unix:``) with
Twisted's ``TLSMemoryBIOFactory``, so the endpoint string keeps saying only where to listen. The
files are read once, when the listener is built; the configuration has already checked that each
holds PEM.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import ssl
from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

__all__ = ["key_fits_certificate", "server_tls_options", "tls_error", "with_tls"]


_PUBLIC = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order."""
    return x509.load_pem_x509_certificates(path.read_bytes())


def key_fits_certificate(key_file: Path, cert_file: Path) -> bool:
    """True when the (first) certificate of ``cert_file`` is for the private key in ``key_file``."""
    key = load_pem_private_key(key_file.read_bytes(), password=None)
    certified = _certificates(cert_file)[0].public_key()
    return key.public_key().public_bytes(*_PUBLIC) == certified.public_bytes(*_PUBLIC)


def server_tls_options(
    *,
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None = None,
    require_client_certificate: bool = False,
) -> ssl.CertificateOptions:
    """The server side of TLS 1.2 or later.

    ``cert_file`` holds our certificate, optionally followed by the intermediates that complete its
    chain. With ``client_ca_file``, a client certificate is asked for and must be signed by one of
    its CAs; ``require_client_certificate`` refuses clients that present none (mutual TLS).
    """
    # cryptography's objects: pyOpenSSL deprecates its own, except in a store of CA certificates.
    certificate, *chain = _certificates(cert_file)
    key = load_pem_private_key(key_file.read_bytes(), password=None)
    verification = {}
    if client_ca_file is not None:
        verification = {
            "verify": True,
            "caCerts": [X509.from_cryptography(c) for c in _certificates(client_ca_file)],
            "requireCertificate": require_client_certificate,
        }
    options = ssl.CertificateOptions(
        privateKey=key,
        certificate=certificate,
        extraCertChain=chain,
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **verification,
    )
    options.getContext()  # built now: what OpenSSL objects to fails the start, not the first client
    return options


def with_tls(factory: IProtocolFactory, options: ssl.CertificateOptions) -> IProtocolFactory:
    """A factory whose connections speak TLS on the outside and hand the plain bytes to ``factory``'s."""
    return TLSMemoryBIOFactory(options, False, factory)


def tls_error(reason: Failure) -> str | None:
    """What OpenSSL said when it ended a connection (no handshake, a refused certificate), else None."""
    return str(reason.value) if reason.check(SSL.Error) else None
