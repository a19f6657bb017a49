"""Server endpoint strings (Twisted's syntax: ``tcp:2575:interface=127.0.0.1``), checked before use.

A listener or the web server is given an endpoint string, which Twisted's ``serverFromString``
turns into a listening port when the engine starts. The configuration checks each string first,
read as Twisted reads it, and asks what it occupies (``bind_of``) so that two endpoints that
cannot listen at once are reported together with every other problem of the file.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = [
    "ALL_INTERFACES",
    "ENDPOINT_OPTIONS",
    "Bind",
    "bind_of",
    "check_endpoint",
    "endpoint_fields",
    "endpoint_options",
    "listen_reusing_port",
    "with_backlog",
]

#: Interfaces that mean "every interface": a port taken on one of them is taken on all.
ALL_INTERFACES = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True)
class Bind:
    """What a server endpoint occupies: a TCP port on an interface, or a UNIX socket path."""

    port: int | None = None
    interface: str = ""
    socket_path: str | None = None

    def clashes(self, other: Bind) -> bool:
        """True when both cannot listen at once (port 0 asks for a free port, so it never clashes)."""
        if self.socket_path is not None or other.socket_path is not None:
            return self.socket_path == other.socket_path
        if self.port == 0 or self.port != other.port:
            return False
        return (
            self.interface == other.interface
            or self.interface in ALL_INTERFACES
            or other.interface in ALL_INTERFACES
        )

    def __str__(self) -> str:
        if self.socket_path is not None:
            return f"UNIX socket {self.socket_path}"
        interface = "all interfaces" if self.interface in ALL_INTERFACES else f"interface {self.interface}"
        return f"port {self.port} on {interface}"


# Option names of each endpoint type, in positional order, as Twisted's endpoint parsers take them.
ENDPOINT_OPTIONS = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "ssl": (
        "port",
        "privateKey",
        "certKey",
        "sslmethod",
        "interface",
        "backlog",
        "extraCertChain",
        "dhParameters",
    ),
    "unix": ("address", "mode", "backlog", "lockfile"),
}


def endpoint_fields(endpoint: str) -> tuple[list[str], dict[str, str]]:
    """The positional fields and the ``name=value`` options of an endpoint string, as Twisted reads them.

    Twisted's grammar, written here because its tokenizer is private (``serverFromString`` uses it,
    and tests/listeners/test_endpoints.py compares the two): fields split at ``:``, the first ``=``
    of a field names an option, a backslash takes the next character as it is. Without Twisted, a
    command such as ``hl7engine healthcheck`` reads an endpoint without importing it.
    """
    fields: list[list[str]] = [[""]]
    operators = ":="  # after a field's first "=", only ":" ends the value
    characters = iter(endpoint)
    for char in characters:
        if char in operators:
            if char == ":":
                fields.append([""])
                operators = ":="
            else:
                fields[-1].append("")
                operators = ":"
        elif char == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ValueError(f"{endpoint!r} ends with a lone backslash")
            fields[-1][-1] += escaped
        else:
            fields[-1][-1] += char
    args = [field[0] for field in fields if len(field) == 1]
    return args, {field[0]: field[1] for field in fields if len(field) > 1}


def endpoint_options(endpoint: str) -> tuple[str, dict[str, str]]:
    """An endpoint string's type and its options by name (positional ones named), as Twisted reads them."""
    args, options = endpoint_fields(endpoint)
    kind, positional = args[0], args[1:]
    names = ENDPOINT_OPTIONS.get(kind)
    if names is None:
        raise ValueError(f"{endpoint!r} must start with tcp:, tcp6:, ssl: or unix:")
    if len(positional) > len(names):
        raise ValueError(f"{endpoint!r} has more fields than a {kind} endpoint takes ({', '.join(names)})")
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"{endpoint!r}: unknown {kind} option {unknown[0]!r}; known: {', '.join(names)}")
    given = dict(zip(names, positional)) | options
    backlog = given.get("backlog")
    if backlog is not None and not (backlog.isdigit() and int(backlog) >= 1):
        raise ValueError(f"{endpoint!r}: backlog must be a whole number of at least 1 (got {backlog!r})")
    return kind, given


def bind_of(endpoint: str) -> Bind:
    """Check a Twisted server endpoint string (read as Twisted reads it) and say what it occupies."""
    kind, given = endpoint_options(endpoint)
    if kind == "unix":
        if not given.get("address"):
            raise ValueError(f"{endpoint!r} must name the socket path, e.g. unix:/run/hl7engine.sock")
        return Bind(socket_path=given["address"])
    port = given.get("port", "")
    if not (port.isdigit() and int(port) <= 65535):
        raise ValueError(f"{endpoint!r} must give a port number 0..65535 (got {port!r})")
    return Bind(port=int(port), interface=given.get("interface", "::" if kind == "tcp6" else ""))


def with_backlog(endpoint: str, backlog: int) -> str:
    """``endpoint`` listening with a queue of ``backlog`` pending connections, unless it sets its own.

    Twisted's default of 50 makes a crowd of senders that connect at once (after a restart of the
    engine or of a network link) wait for retransmitted SYNs, seconds each.
    """
    _kind, given = endpoint_options(endpoint)
    return endpoint if "backlog" in given else f"{endpoint}:backlog={backlog}"


def check_endpoint(value: str) -> str:
    """``value`` when it is a server endpoint string ``bind_of`` accepts; its ValueError otherwise."""
    bind_of(value)
    return value


def listen_reusing_port(reactor, endpoint: str, factory, *, backlog: int):
    """Listen on a ``tcp:``/``tcp6:`` endpoint with SO_REUSEPORT; returns the reactor's listening port.

    Several processes bound so share the port: the kernel spreads new connections over them.
    Twisted's endpoints do not set the option, so the socket is made here and adopted by the reactor.
    TLS is the factory's (``tls.with_tls``), not the endpoint's: ``ssl:`` and ``unix:`` are refused.
    """
    kind, given = endpoint_options(endpoint)
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"{endpoint!r}: several intake processes share tcp: or tcp6: ports only")
    bind = bind_of(endpoint)
    family = socket.AF_INET6 if kind == "tcp6" or ":" in bind.interface else socket.AF_INET
    interface = bind.interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((interface, bind.port))
        sock.listen(int(given.get("backlog", backlog)))
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()  # the reactor's port holds its own duplicate of the descriptor
