"""``hl7engine healthcheck``: is the engine of this config ready? ``GET /readyz`` where engine.http listens.

For a container's HEALTHCHECK or any probe run as a command: it reads only ``engine.http.endpoint``
from the config (nothing else validated or built, no store opened, no Twisted imported) and asks
the web server there, with a short timeout. Docker reserves exit status 2, so every failure, a
config problem included, exits 1.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys

import click

from engine.cli.app import config_option

# An endpoint on every interface is asked on this machine's loopback.
_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@click.command()
@config_option
@click.option(
    "--timeout",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.1, max=60),
    help="Seconds to wait for the connection and for the answer.",
)
def healthcheck(config_path: str, timeout: float) -> None:
    """Exit 0 when the engine of this config answers GET /readyz with 200; else say why and exit 1.

    It asks engine.http's endpoint (on the loopback when that listens on every interface; an ssl:
    endpoint over TLS without checking its certificate, which is the engine's own).
    """
    from engine.errors import ConfigError

    try:
        endpoint = _web_endpoint(config_path)
    except ConfigError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        _unhealthy(f"{config_path}: {len(error.problems)} problem(s)")
    if endpoint is None:
        _unhealthy(f"{config_path} has no engine.http: no web server answers /readyz")
    try:
        connection, where = _connection(endpoint, timeout)
    except ValueError as error:
        _unhealthy(f"engine.http.endpoint: {error}")
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        body = response.read(4096)
    except (OSError, http.client.HTTPException) as error:
        _unhealthy(f"{where}: {error}")
    finally:
        connection.close()
    if response.status == 200:
        click.echo(f"ready: {where}")
        return
    _unhealthy(f"not ready: {where}: HTTP {response.status}{_reason(body)}")


def _web_endpoint(config_path: str) -> str | None:
    """engine.http.endpoint as the config writes it (``${NAME}`` substituted); None without engine.http.

    Only the YAML is read: the engine block's validation (pydantic's models) would cost this
    command most of its time. ConfigError when the file or that value cannot be read.
    """
    from ruamel.yaml import YAMLError

    from engine.configyaml import ConfigProblem, format_path, read_config_text, read_document, yaml_error
    from engine.errors import ConfigError

    text, _ = read_config_text(config_path)
    try:
        document = read_document(text, os.environ)
    except YAMLError as error:
        line, message = yaml_error(error)
        raise ConfigError([ConfigProblem("", line, message, config_path)]) from None
    where = ("engine", "http", "endpoint")
    value = document.data
    for key in where:
        value = value.get(key) if isinstance(value, dict) else None
    found = [message for loc, message in document.problems if loc == where]
    if value is not None and not isinstance(value, str):
        found.append("must be an endpoint string")
    if found:
        path, line = format_path(where), document.line_of(where)
        raise ConfigError([ConfigProblem(path, line, message, config_path) for message in found])
    return value


def _connection(endpoint: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the web server at ``endpoint`` (not yet open), and its URL for messages."""
    from engine.listeners.endpoints import bind_of, endpoint_options

    kind, _ = endpoint_options(endpoint)
    bind = bind_of(endpoint)
    if bind.socket_path is not None:
        return _UnixConnection(bind.socket_path, timeout), f"http+unix://{bind.socket_path}/readyz"
    if bind.port == 0:
        raise ValueError(f"{endpoint!r} asks for any free port: give the port it listens on")
    host = _LOOPBACK.get(bind.interface, bind.interface)
    netloc = f"[{host}]:{bind.port}" if ":" in host else f"{host}:{bind.port}"
    if kind == "ssl":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, bind.port, timeout=timeout, context=context), (
            f"https://{netloc}/readyz"
        )
    return http.client.HTTPConnection(host, bind.port, timeout=timeout), f"http://{netloc}/readyz"


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over a UNIX socket (a ``unix:`` engine.http endpoint)."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def _reason(body: bytes) -> str:
    """The ``reason`` /readyz gives with a 503 (``listeners not bound: main``), as ": reason"."""
    try:
        reason = json.loads(body).get("reason")
    except (ValueError, AttributeError):
        return ""
    return f": {reason}" if isinstance(reason, str) else ""


def _unhealthy(why: str):
    click.echo(f"unhealthy: {why}", err=True)
    sys.exit(1)
