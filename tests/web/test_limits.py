"""engine/web/limits.py: oversized bodies (413) and headers (431) refused while they arrive, over loopback."""

from __future__ import annotations

import socket
import ssl
import time
from urllib.parse import urlencode

import pytest_twisted

from tests.fakes.certs import self_signed
from tests.fakes.harness import in_thread
from tests.fakes.web import BROWSER, FORM, PASSWORD, fetch, logged, login

MB = 1024 * 1024


def peak_rss_bytes(*, reset: bool = False) -> int:
    """The highest resident set size of this process (the test and its server) since the last reset.

    ``reset``: start a new peak at the current size (Linux: clear_refs 5), returning that size.
    """
    if reset:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def post_headers(port: int, *, length: int | None) -> bytes:
    """The head of a POST /login with a declared Content-Length, or chunked when ``length`` is None."""
    framing = b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
    return (
        b"POST /login HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nx-requested-with: test\r\n"
        b"content-type: application/x-www-form-urlencoded\r\n%s\r\n\r\n" % (port, framing)
    )


def send_big_post(port: int, *, chunked: bool, size: int = 100 * MB) -> tuple[bytes, int]:
    """Send a POST of ``size`` bytes as fast as the server takes it; (what it answered, bytes it took).

    Stops when the server closes the connection (or after ``size`` bytes, 20 s at most).
    """
    block = b"a=" + b"x" * (MB - 2)
    sent = 0
    deadline = time.monotonic() + 20
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(post_headers(port, length=None if chunked else size))
        try:
            while sent < size and time.monotonic() < deadline:
                piece = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
                sock.sendall(piece)
                sent += len(block)
        except OSError:  # the server refused and closed: the rest is never sent
            pass
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return answer, sent


@pytest_twisted.inlineCallbacks
def test_a_declared_body_over_the_limit_is_413_before_it_is_read(start_web):
    """A Content-Length over max_body_bytes is answered 413 as soon as the headers are in."""
    web = start_web(max_body_bytes=64 * 1024)

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", web.service.port), timeout=5) as sock:
            sock.sendall(post_headers(web.service.port, length=100 * MB))
            return sock.recv(4096)  # answered without a byte of the body sent

    answer = yield in_thread(ask)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b'{"error":"request body over 65536 bytes"}')
    assert 'hl7engine_web_requests_too_large_total{what="body"} 1.0' in web.metrics.exposition()[0].decode()


@pytest_twisted.inlineCallbacks
def test_large_posts_are_cut_off_without_growing_the_process(start_web, log_events):
    """Four 100 MB POSTs, declared or chunked, without login: each is refused within the first megabytes
    and the process's peak RSS grows by a few MB at most (twisted.web alone reads each form whole)."""
    web = start_web(max_body_bytes=64 * 1024)
    before = peak_rss_bytes(reset=True)
    for chunked in (False, True, False, True):
        answer, sent = yield in_thread(send_big_post, web.service.port, chunked=chunked)
        assert sent < 50 * MB  # the server stopped reading long before the end
        assert answer == b"" or answer.startswith(b"HTTP/1.1 413 ")
    grown = peak_rss_bytes() - before
    print(f"RSS {before / MB:.0f} MB before, peak {grown / MB:.1f} MB higher over four 100 MB POSTs")
    assert grown < 20 * MB
    assert logged(log_events).count("web: request from 127.0.0.1 refused with 413") == 4
    assert [event for event in log_events if "log_failure" in event] == []  # refused cleanly
    after = yield login(web)  # the server goes on serving
    assert after.status == 200


@pytest_twisted.inlineCallbacks
def test_headers_over_the_limit_are_431(start_web):
    """A header block over max_header_bytes, or one endless line, is answered 431 and closed."""
    web = start_web(max_header_bytes=4096)

    def ask(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", web.service.port), timeout=5) as sock:
            sock.sendall(head)
            return sock.recv(4096)

    many = b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-filler: %s\r\n" % (b"y" * 1000) * 5 + b"\r\n"
    assert (yield in_thread(ask, many)).startswith(b"HTTP/1.1 431 ")
    endless = b"GET /health?" + b"q" * 10_000
    assert (yield in_thread(ask, endless)).startswith(b"HTTP/1.1 431 ")
    cookie = {"Cookie": "hl7engine_session=" + "z" * 5000}
    health = yield in_thread(fetch, f"{web.url}/health", headers={"X-Small": "ok"})
    assert health.status == 200
    big_cookie = yield in_thread(_status_or_closed, f"{web.url}/health", cookie)
    assert big_cookie in (431, None)


def _status_or_closed(url: str, headers: dict[str, str]) -> int | None:
    try:
        return fetch(url, headers=headers).status
    except OSError:
        return None


@pytest_twisted.inlineCallbacks
def test_a_body_within_the_limit_is_served(start_web):
    """A login form of exactly max_body_bytes is read and served as before; one byte more is 413."""
    web = start_web(max_body_bytes=1024)
    form = urlencode({"user": "alice", "password": PASSWORD}).encode()
    padded = form + b"&" + b"p" * (1024 - len(form) - 1)
    at_limit = yield in_thread(fetch, f"{web.url}/login", "POST", headers={**BROWSER, **FORM}, body=padded)
    assert len(padded) == 1024
    assert (at_limit.status, at_limit.json()) == (200, {"user": "alice", "role": "admin"})
    over = yield in_thread(_status_or_closed_post, f"{web.url}/login", {**BROWSER, **FORM}, padded + b"p")
    assert over in (413, None)


def _status_or_closed_post(url: str, headers: dict[str, str], body: bytes) -> int | None:
    try:
        return fetch(url, "POST", headers=headers, body=body).status
    except OSError:
        return None


@pytest_twisted.inlineCallbacks
def test_the_limits_hold_over_tls(start_web, tmp_path):
    """Over an ssl: endpoint a declared oversized body is 413 too, and a login is served as before."""
    cert, key = self_signed(tmp_path)
    web = start_web(
        endpoint=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}", max_body_bytes=64 * 1024
    )
    context = ssl.create_default_context(cafile=str(cert))

    def ask(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", web.service.port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(head)
                return sock.recv(4096)

    refused = yield in_thread(ask, post_headers(web.service.port, length=100 * MB))
    assert refused.startswith(b"HTTP/1.1 413 ")
    form = urlencode({"user": "alice", "password": PASSWORD}).encode()
    login_head = post_headers(web.service.port, length=len(form)).replace(
        b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n"
    )
    answer = yield in_thread(ask, login_head + form)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Secure" in answer
