"""Server endpoint strings: what each occupies, which clash, and why a string is refused."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

# Twisted's own tokenizer (private: the one serverFromString uses), the reference ours must match.
from twisted.internet.endpoints import _parse as twisted_parse

from engine.listeners.endpoints import Bind, bind_of, check_endpoint, endpoint_fields, with_backlog


@pytest.mark.parametrize(
    ("endpoint", "bind"),
    [
        ("tcp:2575", Bind(port=2575)),
        ("tcp:port=2575:interface=127.0.0.1", Bind(port=2575, interface="127.0.0.1")),
        ("tcp:2575:127.0.0.1", Bind(port=2575, interface="127.0.0.1")),
        ("tcp6:2575", Bind(port=2575, interface="::")),
        ("tcp6:2575:interface=\\:\\:1", Bind(port=2575, interface="::1")),
        ("ssl:6661:privateKey=key.pem:certKey=cert.pem", Bind(port=6661)),
        ("ssl:6661:interface=10.0.0.5:privateKey=key.pem", Bind(port=6661, interface="10.0.0.5")),
        ("unix:/run/hl7engine/pms.sock", Bind(socket_path="/run/hl7engine/pms.sock")),
        ("unix:address=/tmp/x.sock:mode=600", Bind(socket_path="/tmp/x.sock")),
        ("tcp:0", Bind(port=0)),
    ],
)
def test_an_endpoint_says_what_it_occupies(endpoint, bind):
    """Positional and named options, Twisted's \\ escapes, tcp6's default interface '::'."""
    assert bind_of(endpoint) == bind
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("udp:2575", "'udp:2575' must start with tcp:, tcp6:, ssl: or unix:"),
        ("tcp:web", "'tcp:web' must give a port number 0..65535 (got 'web')"),
        ("tcp:65536", "'tcp:65536' must give a port number 0..65535 (got '65536')"),
        ("tcp:interface=127.0.0.1", "'tcp:interface=127.0.0.1' must give a port number 0..65535 (got '')"),
        ("tcp:1:a:b:c", "'tcp:1:a:b:c' has more fields than a tcp endpoint takes (port, interface, backlog)"),
        (
            "tcp:2575:interfce=127.0.0.1",
            "'tcp:2575:interfce=127.0.0.1': unknown tcp option 'interfce'; known: port, interface, backlog",
        ),
        ("unix:", "'unix:' must name the socket path, e.g. unix:/run/hl7engine.sock"),
        ("tcp:1\\", "'tcp:1\\\\' ends with a lone backslash"),
        ("tcp:1:backlog=x", "'tcp:1:backlog=x': backlog must be a whole number of at least 1 (got 'x')"),
        ("tcp:1:127.0.0.1:0", "'tcp:1:127.0.0.1:0': backlog must be a whole number of at least 1 (got '0')"),
    ],
)
def test_an_endpoint_that_cannot_listen_is_refused_with_the_reason(endpoint, message):
    """Unknown types, bad ports, extra fields, unknown options, a missing path: ValueError saying which."""
    with pytest.raises(ValueError) as refused:
        bind_of(endpoint)
    assert str(refused.value) == message
    with pytest.raises(ValueError):
        check_endpoint(endpoint)


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        (Bind(port=2575, interface="127.0.0.1"), Bind(port=2575, interface="127.0.0.1"), True),
        (Bind(port=2575), Bind(port=2575, interface="127.0.0.1"), True),
        (Bind(port=2575, interface="0.0.0.0"), Bind(port=2575, interface="10.0.0.5"), True),
        (Bind(port=2575, interface="::"), Bind(port=2575, interface="::1"), True),
        (Bind(port=2575, interface="127.0.0.1"), Bind(port=2575, interface="10.0.0.5"), False),
        (Bind(port=2575), Bind(port=2576), False),
        (Bind(port=0), Bind(port=0), False),
        (Bind(socket_path="/tmp/a.sock"), Bind(socket_path="/tmp/a.sock"), True),
        (Bind(socket_path="/tmp/a.sock"), Bind(socket_path="/tmp/b.sock"), False),
        (Bind(socket_path="/tmp/a.sock"), Bind(port=2575), False),
    ],
)
def test_two_endpoints_clash_when_they_cannot_listen_at_once(first, second, clash):
    """The same port on the same interface or on a wildcard, or the same socket path; port 0 never."""
    assert first.clashes(second) is clash
    assert second.clashes(first) is clash


def test_what_an_endpoint_occupies_reads_as_words():
    """The text a clash problem names: the port and interface, or the socket path."""
    assert str(Bind(port=2575, interface="127.0.0.1")) == "port 2575 on interface 127.0.0.1"
    assert str(Bind(port=2575, interface="::")) == "port 2575 on all interfaces"
    assert str(Bind(socket_path="/tmp/a.sock")) == "UNIX socket /tmp/a.sock"


@pytest.mark.parametrize(
    ("endpoint", "listened"),
    [
        ("tcp:2575", "tcp:2575:backlog=1024"),
        ("tcp:2575:interface=127.0.0.1", "tcp:2575:interface=127.0.0.1:backlog=1024"),
        ("unix:/run/pms.sock", "unix:/run/pms.sock:backlog=1024"),
        ("tcp:2575:backlog=4096", "tcp:2575:backlog=4096"),
        ("tcp:2575:127.0.0.1:64", "tcp:2575:127.0.0.1:64"),
    ],
)
def test_an_endpoint_without_a_backlog_gets_the_default_one(endpoint, listened):
    """The backlog is added as a named option unless the string gives one (by name or position)."""
    assert with_backlog(endpoint, 1024) == listened
    assert bind_of(listened) == bind_of(endpoint)


def test_endpoints_are_read_exactly_as_twisted_reads_them():
    """Fields, options, escapes and a lone backslash, on thousands of strings, read as Twisted reads them."""
    rng = random.Random(2575)
    strings = ["tcp6:2575:interface=\\:\\:1", "ssl:1:a=b=c:d", "tcp:\\=x=y", "", ":", "=", "a\\"]
    strings += ["".join(rng.choice(":=\\ab1") for _ in range(rng.randint(0, 12))) for _ in range(5000)]
    for endpoint in strings:
        try:
            expected = twisted_parse(endpoint)
        except RuntimeError:  # a lone backslash at the end
            with pytest.raises(ValueError, match="ends with a lone backslash"):
                endpoint_fields(endpoint)
            continue
        assert endpoint_fields(endpoint) == expected, endpoint


def test_an_endpoint_is_checked_without_importing_twisted():
    """Reading an endpoint imports no Twisted: commands such as healthcheck start without it."""
    code = (
        "import sys; from engine.listeners.endpoints import bind_of; bind_of('tcp:8080:interface=127.0.0.1');"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert found.stdout.strip() == "[]"
