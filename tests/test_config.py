"""engine/config.py: channels.yaml -> frozen typed objects, all problems at once with their path and line.

Reading the YAML itself (lines, environment variables, YAML errors) is engine/configyaml.py's.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.config import ConfigProblem, load_config, parse_config
from engine.configengine import WebUser
from engine.errors import ConfigError, EngineError
from engine.store.cipher import Cipher
from engine.web.passwords import hash_password
from tests.fakes.certs import CertificateAuthority
from tests.fakes.config import CONFIGS, parse, problems

REPO = Path(__file__).resolve().parents[1]

LISTENER = """\
listeners:
  - name: pms
    type: mllp
    endpoint: "tcp:2575:interface=127.0.0.1"
"""


# --- the bundled configuration ----------------------------------------------------------------------------


def test_bundled_channels_yaml_loads_with_the_clinic_listeners_and_channels():
    """The channels.yaml shipped at the repository root is valid and describes PMS, EMR and lab."""
    config = load_config(REPO / "channels.yaml", environ={})

    assert [(listener.name, getattr(listener, "endpoint", None)) for listener in config.listeners] == [
        ("pms", "tcp:2575:interface=127.0.0.1"),
        ("emr", "tcp:2576:interface=127.0.0.1"),
        ("lab", "tcp:2577:interface=127.0.0.1"),
        ("lab-files", None),
    ]
    assert config.listener("lab-files").directory == REPO / "inbox" / "lab"
    assert [c.name for c in config.channels_for("pms")] == ["pms-adt", "pms-dft", "pms-all"]
    assert [c.name for c in config.channels_for("emr")] == ["emr-siu", "emr-all"]
    assert [c.name for c in config.channels_for("lab")] == ["lab-oru", "lab-all"]
    assert [(d.name, d.type) for d in config.channels[0].destinations] == [
        ("emr", "mllp"),
        ("record", "record"),
    ]
    assert config.channels[0].destinations[0].port == 6661
    assert config.engine.data_dir == REPO / "data"
    assert config.store_url == f"sqlite:///{REPO}/data/hl7engine.db"
    assert config.source_path == REPO / "channels.yaml"


@pytest.mark.parametrize("listener", ["pms", "emr", "lab"])
@pytest.mark.parametrize("message_type", ["ADT^A01", "ORU^R01", "ZZZ^Z99", "ACK", ""])
def test_bundled_channels_yaml_accepts_every_message_type_on_every_listener(listener, message_type):
    """Each bundled listener has a catch-all channel, so no message is refused for its type (AR 200)."""
    config = load_config(REPO / "channels.yaml", environ={})

    assert any(c.accepts(message_type, "ANY", "SITE") for c in config.channels_for(listener))


def test_bundled_channels_yaml_takes_the_store_url_from_the_environment():
    """HL7ENGINE_DB_URL, when set, replaces the default SQLite store of the bundled file."""
    url = "postgresql+psycopg://hl7engine@127.0.0.1/hl7engine"

    config = load_config(REPO / "channels.yaml", environ={"HL7ENGINE_DB_URL": url})

    assert config.store_url == url


# --- problems: all at once, with path and line --------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_path_and_line():
    """One load reports every schema, environment and cross-reference problem, in file order."""
    path = CONFIGS / "many_problems.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    source = str(path)
    assert caught.value.problems == [
        ConfigProblem("engine.aplication", 5, "unknown key 'aplication'", source),
        ConfigProblem(
            "engine.default_version",
            6,
            'must be a quoted string such as "2.5" (YAML read 2.5 as a number)',
            source,
        ),
        ConfigProblem("engine.store.url", 8, "environment variable HL7ENGINE_TEST_DB_URL is not set", source),
        ConfigProblem(
            "engine.store.max_batch",
            9,
            "must be a valid integer, unable to parse string as an integer (got 'lots')",
            source,
        ),
        ConfigProblem("engine.store.pool_size", 10, "unknown key 'pool_size'", source),
        ConfigProblem("listeners[0].idle_timeout_seconds", 15, "must be greater than 0 (got 0)", source),
        ConfigProblem("listeners[1].name", 16, "listener name 'pms' is already used by listeners[0]", source),
        ConfigProblem(
            "listeners[1].endpoint",
            18,
            "port 2575 on interface 127.0.0.1 is already used by listeners[0].endpoint",
            source,
        ),
        ConfigProblem(
            "listeners[1].processing_ids[1]", 19, "String should match pattern '^[A-Z]$' (got 'xx')", source
        ),
        ConfigProblem(
            "listeners[2].endpoint", 22, "'udp:2577' must start with tcp:, tcp6:, ssl: or unix:", source
        ),
        ConfigProblem(
            "channels[0].accept.types[1]",
            27,
            "must be a message type pattern: CODE or CODE^TRIGGER made of A-Z, 0-9, * and ?,"
            " e.g. ADT, ADT^A0*, ORU^R01, * (got 'adt^a01')",
            source,
        ),
        ConfigProblem("channels[0].accept.typez", 28, "unknown key 'typez'", source),
        ConfigProblem(
            "channels[1].name", 29, "channel name 'pms-adt' is already used by channels[0]", source
        ),
        ConfigProblem("channels[1].source", 30, "no listener named 'pmss'; known: pms, lab", source),
        ConfigProblem(
            "channels[1].enabled",
            31,
            "must be a valid boolean, unable to interpret input (got 'maybe')",
            source,
        ),
        ConfigProblem("channels[1].accept.senders[0].facilty", 36, "unknown key 'facilty'", source),
        ConfigProblem("channels[2].accept", 37, "required key is missing", source),
        ConfigProblem(
            "channels[2].respond",
            39,
            "must be 'after_store' or 'after_processing' (got 'after_destinations')",
            source,
        ),
    ]


def test_config_error_message_lists_problems_as_file_line_path_message():
    """ConfigError's text has one `file:line: path: message` line per problem, and it is an EngineError."""
    path = CONFIGS / "many_problems.yaml"

    with pytest.raises(EngineError) as caught:
        load_config(path, environ={})

    lines = str(caught.value).splitlines()
    assert len(lines) == 18
    assert lines[0] == f"{path}:5: engine.aplication: unknown key 'aplication'"
    assert lines[11] == f"{path}:28: channels[0].accept.typez: unknown key 'typez'"


def test_problem_without_path_or_line_omits_them():
    """A problem about the whole file prints without a path, and without a line when there is none."""
    assert str(ConfigProblem("", 3, "invalid YAML: oops", "a.yaml")) == "a.yaml:3: invalid YAML: oops"
    assert str(ConfigProblem("", None, "cannot read", "a.yaml")) == "a.yaml: cannot read"
    assert str(ConfigProblem("listeners[0].name", 4, "bad")) == "<string>:4: listeners[0].name: bad"


def test_unreadable_file_is_a_config_error(tmp_path):
    """A missing file is reported as a ConfigError, not an OSError."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")

    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("", None)
    assert problem.message.startswith("cannot read the file:")


NOT_A_CODEC = "is not a Python text codec (see the codecs module)"


@pytest.mark.parametrize(
    ("setting", "path", "message"),
    [
        ("application: ''", "engine.application", "must not be empty"),
        (
            "facility: 'A^B'",
            "engine.facility",
            "must not contain HL7 delimiters | ^ ~ \\ & or line breaks (got 'A^B')",
        ),
        ("default_charset: base64", "engine.default_charset", f"'base64' {NOT_A_CODEC}"),
        ("default_charset: x-nope", "engine.default_charset", f"'x-nope' {NOT_A_CODEC}"),
        (
            "default_version: 'v2'",
            "engine.default_version",
            "must be an HL7 v2 version such as 2.3.1 or 2.5.1 (got 'v2')",
        ),
        (
            "store: {durability: disk}",
            "engine.store.durability",
            "must be 'process' or 'power_loss' (got 'disk')",
        ),
        (
            "store: {lock_timeout_seconds: 0}",
            "engine.store.lock_timeout_seconds",
            "must be greater than 0 (got 0)",
        ),
        ("store: {max_batch: 0}", "engine.store.max_batch", "must be greater than or equal to 1 (got 0)"),
        (
            "store: {max_batch: 100001}",
            "engine.store.max_batch",
            "must be less than or equal to 100000 (got 100001)",
        ),
        (
            "store: {wal_max_bytes: 1000}",
            "engine.store.wal_max_bytes",
            "must be greater than or equal to 1048576 (got 1000)",
        ),
        (
            "store: {url: 'hl7engine.db'}",
            "engine.store.url",
            "must be an SQLAlchemy URL such as postgresql+psycopg://user@host/db (got 'hl7engine.db')",
        ),
        ("http: {}", "engine.http.endpoint", "required key is missing"),
        (
            "http: {endpoint: 'tcp:web'}",
            "engine.http.endpoint",
            "'tcp:web' must give a port number 0..65535 (got 'web')",
        ),
        (
            "http: {endpoint: 'tcp:0', max_body_bytes: 100}",
            "engine.http.max_body_bytes",
            "must be greater than or equal to 1024 (got 100)",
        ),
        (
            "http: {endpoint: 'tcp:0', login_failures_per_user: 0}",
            "engine.http.login_failures_per_user",
            "must be greater than or equal to 1 (got 0)",
        ),
        (
            "store: {retention_days: 0}",
            "engine.store.retention_days",
            "must be greater than or equal to 1 (got 0)",
        ),
        (
            "store: {prune_every_seconds: 0}",
            "engine.store.prune_every_seconds",
            "must be greater than 0 (got 0)",
        ),
        (
            "store: {prune_batch: 10001}",
            "engine.store.prune_batch",
            "must be less than or equal to 10000 (got 10001)",
        ),
        (
            "shutdown_timeout_seconds: -1",
            "engine.shutdown_timeout_seconds",
            "must be greater than 0 (got -1)",
        ),
    ],
)
def test_engine_values_are_validated(setting, path, message):
    """Each engine setting rejects a bad value with its own path and a message that says what is allowed."""
    assert problems(f"engine:\n  {setting}\nlisteners: []\nchannels: []\n") == [(path, 2, message)]


@pytest.mark.parametrize(
    ("setting", "path", "message"),
    [
        ("name: 'p m s'", "listeners[0].name", "must be letters, digits, '_', '.' or '-' (got 'p m s')"),
        ("type: http", "listeners[0].type", "must be one of 'mllp', 'file' (got 'http')"),
        (
            "max_frame_bytes: 1023",
            "listeners[0].max_frame_bytes",
            "must be greater than or equal to 1024 (got 1023)",
        ),
        (
            "max_frame_bytes: 1073741825",
            "listeners[0].max_frame_bytes",
            "must be less than or equal to 1073741824 (got 1073741825)",
        ),
        ("processing_ids: []", "listeners[0].processing_ids", "must not be empty"),
        (
            "honour_accept_ack_type: sometimes",
            "listeners[0].honour_accept_ack_type",
            "must be a valid boolean, unable to interpret input (got 'sometimes')",
        ),
        (
            "endpoint: 'tcp:-1'",
            "listeners[0].endpoint",
            "'tcp:-1' must give a port number 0..65535 (got '-1')",
        ),
        (
            "endpoint: 'tcp:2575:interfce=127.0.0.1'",
            "listeners[0].endpoint",
            "'tcp:2575:interfce=127.0.0.1': unknown tcp option 'interfce'; known: port, interface, backlog",
        ),
        (
            "endpoint: 'tcp:1:a:b:c'",
            "listeners[0].endpoint",
            "'tcp:1:a:b:c' has more fields than a tcp endpoint takes (port, interface, backlog)",
        ),
        (
            "endpoint: 'unix:'",
            "listeners[0].endpoint",
            "'unix:' must name the socket path, e.g. unix:/run/hl7engine.sock",
        ),
        ("endpoint: 'tcp:1\\'", "listeners[0].endpoint", "'tcp:1\\\\' ends with a lone backslash"),
        (
            "endpoint: 'tcp:1:backlog=0'",
            "listeners[0].endpoint",
            "'tcp:1:backlog=0': backlog must be a whole number of at least 1 (got '0')",
        ),
        ("max_connections: 0", "listeners[0].max_connections", "must be greater than or equal to 1 (got 0)"),
        ("frame_timeout_seconds: 0", "listeners[0].frame_timeout_seconds", "must be greater than 0 (got 0)"),
        ("allowed_networks: []", "listeners[0].allowed_networks", "must not be empty"),
        (
            "allowed_networks: [10.0.0.0/8, 10.0.0.1/8]",
            "listeners[0].allowed_networks[1]",
            "must be an IP network such as 10.0.0.0/8 or an address (10.0.0.1/8 has host bits set)",
        ),
        (
            "allowed_networks: [lan]",
            "listeners[0].allowed_networks[0]",
            "must be an IP network such as 10.0.0.0/8 or an address"
            " ('lan' does not appear to be an IPv4 or IPv6 network)",
        ),
    ],
)
def test_listener_values_are_validated(setting, path, message):
    """Each listener setting rejects a bad value with its own path and a message that says what is allowed."""
    key, value = setting.split(": ", 1)
    listener = {"name": "pms", "type": "mllp", "endpoint": "'tcp:2575'"} | {key: value}
    text = "listeners:\n  - {" + ", ".join(f"{k}: {v}" for k, v in listener.items()) + "}\nchannels: []\n"
    assert problems(text) == [(path, 2, message)]


def test_listener_transport_settings_are_checked_with_their_path(tmp_path):
    """TLS files that cannot be read or hold no PEM, a key of another certificate, a required client
    certificate without its CA, Twisted's ssl: endpoint, an allowlist on a UNIX socket: each at its path."""
    ca = CertificateAuthority(tmp_path)
    cert, key = ca.issue("server")
    _, other_key = ca.issue("client", client=True)
    (tmp_path / "junk.pem").write_text("not a key")
    found = problems(
        f"""
        listeners:
          - name: a
            endpoint: tcp:2575
            tls: {{cert_file: missing.crt, key_file: junk.pem}}
          - name: b
            endpoint: tcp:2576
            tls: {{cert_file: {cert.name}, key_file: {other_key.name}}}
          - name: c
            endpoint: tcp:2577
            tls: {{cert_file: {cert.name}, key_file: {key.name}, require_client_certificate: true}}
          - name: d
            endpoint: ssl:2578:privateKey={key.name}:certKey={cert.name}
          - name: e
            endpoint: unix:/tmp/e.sock
            allowed_networks: [127.0.0.1]
        channels: []
        """,
        base_dir=tmp_path,
    )
    assert found[1][:2] == ("listeners[0].tls.key_file", 5)
    assert found[1][2].startswith(f"{tmp_path}/junk.pem does not hold a PEM private key (")
    assert found[:1] + found[2:] == [
        ("listeners[0].tls.cert_file", 5, f"cannot read {tmp_path}/missing.crt: No such file or directory"),
        (
            "listeners[1].tls",
            8,
            f"{other_key} is not the private key of the certificate in {cert}",
        ),
        ("listeners[2].tls", 11, "require_client_certificate needs client_ca_file (the CA that signs them)"),
        ("listeners[3]", 12, "use a tcp: endpoint with a tls: block (an ssl: endpoint cannot check clients)"),
        ("listeners[4]", 14, "allowed_networks needs a network endpoint (tcp: or tcp6:), not unix:"),
    ]


def test_listener_transport_defaults_and_tls_paths(tmp_path):
    """1000 connections, 60 s per frame, any peer, no TLS by default; TLS files resolve against the
    config's folder, and a client CA makes the client certificate required unless said otherwise."""
    ca = CertificateAuthority(tmp_path)
    cert, key = ca.issue("server")
    config = parse(
        f"""
        listeners:
          - {{name: plain, endpoint: "tcp:2575"}}
          - name: mutual
            endpoint: tcp:2576
            allowed_networks: [10.0.0.0/8, "::1", 192.168.1.7]
            tls: {{cert_file: {cert.name}, key_file: {key.name}, client_ca_file: {ca.cert_file.name}}}
          - name: optional
            endpoint: tcp:2577
            tls:
              cert_file: {cert.name}
              key_file: {key.name}
              client_ca_file: {ca.cert_file.name}
              require_client_certificate: false
          - name: server-only
            endpoint: tcp:2578
            tls: {{cert_file: {cert.name}, key_file: {key.name}}}
        channels: []
        """,
        base_dir=tmp_path,
    )
    plain, mutual, optional, server_only = config.listeners
    assert (plain.max_connections, plain.frame_timeout_seconds, plain.allowed_networks, plain.tls) == (
        1000,
        60.0,
        None,
        None,
    )
    assert [str(n) for n in mutual.allowed_networks] == ["10.0.0.0/8", "::1/128", "192.168.1.7/32"]
    assert (mutual.tls.cert_file, mutual.tls.client_ca_file) == (cert, ca.cert_file)
    assert [t.require_client_certificate for t in (mutual.tls, optional.tls, server_only.tls)] == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:2575",
        "tcp:port=2575:interface=127.0.0.1",
        "tcp6:2575:interface=\\:\\:1",
        "unix:/run/hl7engine/pms.sock",
        "unix:address=/tmp/x.sock:mode=600",
    ],
)
def test_twisted_server_endpoint_strings_are_accepted(endpoint):
    """tcp, tcp6 and unix endpoint strings in Twisted's syntax (with \\ escapes) are valid for a listener."""
    config = parse(f"listeners:\n  - {{name: pms, type: mllp, endpoint: '{endpoint}'}}\nchannels: []\n")

    assert config.listener("pms").endpoint == endpoint


@pytest.mark.parametrize(
    ("first", "second", "clash"),
    [
        ("tcp:2575:interface=127.0.0.1", "tcp:2575:interface=127.0.0.1", "port 2575 on interface 127.0.0.1"),
        ("tcp:2575", "tcp:2575:interface=127.0.0.1", "port 2575 on interface 127.0.0.1"),
        ("tcp:2575:interface=127.0.0.1", "tcp6:2575", "port 2575 on all interfaces"),
        ("unix:/tmp/a.sock", "unix:/tmp/a.sock", "UNIX socket /tmp/a.sock"),
        ("tcp:2575:interface=127.0.0.1", "tcp:2575:interface=10.0.0.5", None),
        ("tcp:2575:interface=127.0.0.1", "tcp:2576:interface=127.0.0.1", None),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1", None),
    ],
)
def test_two_listeners_cannot_listen_on_the_same_address(first, second, clash):
    """A port shared on one interface (or a wildcard), or a shared socket path: an error at the second."""
    text = f"""\
        listeners:
          - {{name: a, type: mllp, endpoint: '{first}'}}
          - {{name: b, type: mllp, endpoint: '{second}'}}
        channels: []
        """
    if clash is None:
        assert len(parse(text).listeners) == 2
    else:
        assert problems(text) == [
            ("listeners[1].endpoint", 3, f"{clash} is already used by listeners[0].endpoint")
        ]


def test_http_endpoint_may_not_share_a_listener_port():
    """The web server's endpoint takes part in the clash check; the listener written after it is blamed."""
    text = """\
        engine:
          http: {endpoint: "tcp:2575:interface=127.0.0.1"}
        listeners:
          - {name: pms, type: mllp, endpoint: "tcp:2575:interface=127.0.0.1"}
        channels: []
        """
    assert problems(text) == [
        (
            "listeners[0].endpoint",
            4,
            "port 2575 on interface 127.0.0.1 is already used by engine.http.endpoint",
        )
    ]


@pytest.mark.parametrize(
    ("accept", "path", "message"),
    [
        ("{types: []}", "channels[0].accept.types", "must not be empty"),
        (
            "{types: ['ADT^A01^ADT_A01']}",
            "channels[0].accept.types[0]",
            "must be a message type pattern: CODE or CODE^TRIGGER made of A-Z, 0-9, * and ?,"
            " e.g. ADT, ADT^A0*, ORU^R01, * (got 'ADT^A01^ADT_A01')",
        ),
        (
            "{types: ['*'], senders: [{}]}",
            "channels[0].accept.senders[0]",
            "give application, facility or both (leave senders empty to accept any sender)",
        ),
        ("{types: ['*'], senders: [PMS]}", "channels[0].accept.senders[0]", "must be a mapping (got 'PMS')"),
        ("[ADT]", "channels[0].accept", "must be a mapping (got a list)"),
    ],
)
def test_accept_rules_are_validated(accept, path, message):
    """Type patterns, sender entries and the accept block itself are checked and located."""
    text = LISTENER + f"channels:\n  - name: c\n    source: pms\n    accept: {accept}\n"
    assert problems(text) == [(path, 8, message)]


def test_no_listener_problem_lists_known_listeners_or_none():
    """A channel naming a missing listener says which listeners exist, or '(none)'."""
    text = "listeners: []\nchannels:\n  - {name: c, source: pms, accept: {types: ['*']}}\n"

    assert problems(text) == [("channels[0].source", 3, "no listener named 'pms'; known: (none)")]


def test_disabled_channel_is_still_checked():
    """enabled: false turns a channel off but does not exempt it from validation."""
    text = LISTENER + "channels:\n  - {name: c, enabled: false, source: lab, accept: {types: ['*']}}\n"

    assert problems(text) == [("channels[0].source", 6, "no listener named 'lab'; known: pms")]


# --- a failed substitution hides what follows from it --------------------------------------------------


def test_missing_variable_hides_follow_on_errors_at_the_same_place():
    """An unset variable is reported once, not again as 'not an integer' or 'no listener named'."""
    text = (
        LISTENER
        + "    max_frame_bytes: ${MAX}\n"
        + "channels:\n  - {name: c, source: '${SRC}', accept: {types: ['*']}}\n"
    )

    assert problems(text, environ={}) == [
        ("listeners[0].max_frame_bytes", 5, "environment variable MAX is not set"),
        ("channels[0].source", 7, "environment variable SRC is not set"),
    ]


# --- defaults and paths ----------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults():
    """Every optional key takes the default documented in docs/configuration.md."""
    config = load_config(CONFIGS / "minimal.yaml")

    engine = config.engine
    assert (engine.application, engine.facility, engine.default_charset, engine.default_version) == (
        "HL7ENGINE",
        "HUB",
        "utf-8",
        "2.5.1",
    )
    assert engine.data_dir == CONFIGS / "data"
    assert (
        engine.store.url,
        engine.store.durability,
        engine.store.lock_timeout_seconds,
        engine.store.max_batch,
        engine.store.wal_max_bytes,
    ) == (
        None,
        "process",
        5.0,
        500,
        64 * 1024 * 1024,
    )
    assert engine.http is None
    assert engine.shutdown_timeout_seconds == 30.0
    pms = config.listener("pms")
    assert (pms.type, pms.max_frame_bytes, pms.idle_timeout_seconds, pms.processing_ids) == (
        "mllp",
        4194304,
        300.0,
        None,
    )
    assert pms.honour_accept_ack_type is False
    [everything] = config.channels
    assert (everything.description, everything.enabled, everything.accept.senders, everything.respond) == (
        "",
        True,
        (),
        "after_store",
    )
    assert everything.validation == "off"


def test_relative_data_dir_resolves_against_the_config_files_folder(tmp_path, monkeypatch):
    """data_dir: spool in a file means <file's folder>/spool, wherever the engine is started."""
    monkeypatch.chdir(tmp_path)

    config = load_config(CONFIGS / "relative_data_dir.yaml")

    assert config.engine.data_dir == CONFIGS / "spool"
    assert config.store_url == f"sqlite:///{CONFIGS}/spool/hl7engine.db"
    assert config.source_path == CONFIGS / "relative_data_dir.yaml"


def test_parsed_text_resolves_data_dir_against_base_dir_or_working_folder(tmp_path, monkeypatch):
    """parse_config has no file: base_dir (default: the working folder) anchors paths; '..' is folded."""
    text = "engine: {data_dir: ../spool}\nlisteners: []\nchannels: []\n"
    monkeypatch.chdir(tmp_path)

    assert parse(text, base_dir=tmp_path / "etc").engine.data_dir == tmp_path / "spool"
    assert parse(text).engine.data_dir == tmp_path.parent / "spool"
    assert parse(text).source_path is None


def test_absolute_data_dir_is_kept(tmp_path):
    """An absolute data_dir is used as written."""
    config = parse(
        f"engine: {{data_dir: '{tmp_path}/db'}}\nlisteners: []\nchannels: []\n", base_dir="/elsewhere"
    )

    assert config.engine.data_dir == tmp_path / "db"


def test_empty_store_url_means_sqlite_under_data_dir(tmp_path):
    """url: '' (e.g. from ${DB_URL:-}) is the same as null: the SQLite file under data_dir."""
    config = parse("engine: {store: {url: ''}}\nlisteners: []\nchannels: []\n", base_dir=tmp_path)

    assert config.engine.store.url is None
    assert config.store_url == f"sqlite:///{tmp_path}/data/hl7engine.db"


# --- the Config API --------------------------------------------------------------------------------


def test_channels_for_returns_enabled_channels_of_a_listener_in_file_order():
    """channels_for() skips disabled channels and other listeners' channels and keeps file order."""
    config = parse(
        """\
        listeners:
          - {name: pms, type: mllp, endpoint: "tcp:2575"}
          - {name: lab, type: mllp, endpoint: "tcp:2577"}
        channels:
          - {name: c1, source: pms, accept: {types: [ADT]}}
          - {name: c2, source: lab, accept: {types: [ORU]}}
          - {name: c3, source: pms, enabled: false, accept: {types: [ADT]}}
          - {name: c4, source: pms, accept: {types: ["*"]}}
        """
    )

    assert [c.name for c in config.channels_for("pms")] == ["c1", "c4"]
    assert [c.name for c in config.channels_for("lab")] == ["c2"]
    assert config.listener("lab").endpoint == "tcp:2577"
    with pytest.raises(KeyError):
        config.listener("emr")
    with pytest.raises(KeyError):
        config.channels_for("emr")


def test_models_are_frozen_and_lists_are_tuples():
    """No part of a loaded Config can be changed, and its lists are tuples."""
    config = load_config(CONFIGS / "minimal.yaml")

    for model, field in [
        (config, "listeners"),
        (config.engine, "application"),
        (config.engine.store, "url"),
        (config.listener("pms"), "max_frame_bytes"),
        (config.channels[0], "enabled"),
        (config.channels[0].accept, "types"),
    ]:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(model, field, getattr(model, field))
    assert isinstance(config.listeners, tuple)
    assert isinstance(config.channels[0].accept.types, tuple)
    assert isinstance(load_config(REPO / "channels.yaml", environ={}).listener("pms").processing_ids, tuple)


# --- users of the web server --------------------------------------------------------------------------------


def test_config_refuses_a_plain_password(tmp_path):
    """engine.http.users must hold hashes: a plain password is reported at its YAML path."""
    rest = "listeners: []\nchannels: []\n"
    text = 'engine:\n  http:\n    endpoint: "tcp:0"\n    users:\n      alice: "s3cret"\n' + rest
    with pytest.raises(ConfigError) as raised:
        parse_config(text, base_dir=tmp_path)
    assert "engine.http.users.alice" in str(raised.value) and "hl7engine hash-password" in str(raised.value)
    hashed = hash_password("s3cret", iterations=1000)
    config = parse_config(
        f'engine:\n  http:\n    endpoint: "tcp:0"\n    users:\n      alice: "{hashed}"\n' + rest,
        base_dir=tmp_path,
    )
    http = config.engine.http
    assert (http.users, http.session_minutes) == ({"alice": WebUser(password=hashed, role="admin")}, 30)
    limits = (
        http.login_failures_per_user,
        http.login_failures_per_address,
        http.login_window_seconds,
        http.max_body_bytes,
        http.max_header_bytes,
    )
    assert limits == (5, 20, 300, 65536, 16384)


def test_users_have_roles_and_a_bare_hash_is_an_admin(tmp_path):
    """users.<name> is {password, role} or a bare hash (admin); a wrong role or missing key names its path."""
    hashed = hash_password("s3cret", iterations=1000)
    rest = "listeners: []\nchannels: []\n"
    head = 'engine:\n  http:\n    endpoint: "tcp:0"\n    users:\n'
    config = parse_config(
        head + f'      alice: "{hashed}"\n      vera: {{password: "{hashed}", role: viewer}}\n' + rest,
        base_dir=tmp_path,
    )
    assert config.engine.http.users == {
        "alice": WebUser(password=hashed, role="admin"),
        "vera": WebUser(password=hashed, role="viewer"),
    }
    assert config.summary()["users"] == [
        {"name": "alice", "role": "admin"},
        {"name": "vera", "role": "viewer"},
    ]
    for user, path in (
        (f'{{password: "{hashed}", role: boss}}', "engine.http.users.vera.role"),
        ("{role: viewer}", "engine.http.users.vera.password"),
        ('{password: "s3cret", role: viewer}', "engine.http.users.vera.password"),
        (f'{{password: "{hashed}", role: viewer, colour: red}}', "engine.http.users.vera.colour"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config(head + f"      vera: {user}\n" + rest, base_dir=tmp_path)
        assert path in str(raised.value), user


ENCRYPTION = """\
engine:
  store:
    encryption:
      key: {current}
      index: {{env: INDEX_KEY}}
      keys:
        k1: {{file: keys/k1.key}}
        k2: {{env: K2_KEY}}
listeners: []
channels: []
"""


def test_retention_policy_takes_channel_days_and_the_store_default():
    """retention_days of a channel wins over the store's, which covers every other channel."""
    text = (
        "engine:\n  store: {retention_days: 30}\n"
        + LISTENER
        + "channels:\n"
        + "  - {name: adt, source: pms, accept: {types: [ADT]}, retention_days: 7}\n"
        + "  - {name: lab, source: pms, accept: {types: [ORU]}}\n"
    )
    policy = parse(text).retention_policy()
    assert (policy.days_for("adt"), policy.days_for("lab"), policy.days_for(None)) == (7, 30, 30)
    assert parse(LISTENER + "channels: []\n").retention_policy().prunes_anything is False


def test_a_config_knows_the_files_it_read_and_what_each_channel_uses(tmp_path):
    """inputs lists each CSV table and python: module with its hash; inputs_of a channel holds only the
    tables and modules its own and its destinations' transforms use."""
    (tmp_path / "sites.csv").write_text("code,site\nA,1\n")
    text = """
listeners:
  - {name: main, endpoint: "tcp:0"}
tables:
  sites: {csv: sites.csv, key: code, value: site}
  sexes: {inline: {M: male}}
channels:
  - name: adt
    source: main
    accept: {types: [ADT]}
    transforms:
      - python: tests.transforms.hatch:mark_processed
    destinations:
      - name: out
        type: file
        directory: out
        transforms:
          - map: {field: MSH-4, table: sites}
  - name: lab
    source: main
    accept: {types: [ORU]}
    transforms:
      - map: {field: PID-8, table: sexes}
"""
    config = parse_config(text, base_dir=tmp_path)
    assert [(i.kind, i.name, Path(i.path).name) for i in config.inputs] == [
        ("module", "tests.transforms.hatch", "hatch.py"),
        ("table", "sites", "sites.csv"),
    ]
    adt, lab = config.channels
    assert sorted(config.inputs_of(adt)) == ["module tests.transforms.hatch", "table sites"]
    assert list(config.inputs_of(lab)) == ["table sexes"]
    assert config.lookup_tables["sites"].lookup("A") == "1"


def test_channel_retention_days_is_checked_at_its_path():
    """A channel's retention_days below one day is refused where it is written."""
    text = LISTENER + "channels:\n  - {name: c, source: pms, accept: {types: ['*']}, retention_days: 0}\n"
    assert problems(text) == [("channels[0].retention_days", 6, "must be greater than or equal to 1 (got 0)")]


def test_channel_validate_takes_its_three_levels_and_refuses_others_at_its_path():
    """A channel's validate is off, tolerant or strict; another value is refused where it is written."""
    channel = "channels:\n  - {name: c, source: pms, accept: {types: ['*']}, validate: %s}\n"
    assert [
        parse(LISTENER + channel % level).channels[0].validation for level in ("off", "tolerant", "strict")
    ] == [
        "off",
        "tolerant",
        "strict",
    ]
    [(path, line, message)] = problems(LISTENER + channel % "always")
    assert (path, line) == ("channels[0].validate", 6) and "'off', 'tolerant' or 'strict'" in message


def _key(fill: bytes) -> str:
    return base64.b64encode(fill * 32).decode()


def test_encryption_keys_are_read_from_files_and_variables(tmp_path):
    """Each key comes from its file (relative to the config) or variable; the cipher seals with ``key``."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k1.key").write_text(_key(b"1") + "\n")
    environ = {"K2_KEY": _key(b"2"), "INDEX_KEY": _key(b"i")}
    config = parse(ENCRYPTION.format(current="k2"), base_dir=tmp_path, environ=environ)
    cipher = config.engine.store.cipher()
    assert cipher.current == "k2" and cipher.key_of(cipher.seal(b"x")) == "k2"
    assert cipher.open(Cipher({"k1": b"1" * 32}, "k1").seal(b"old")) == b"old"
    assert parse(LISTENER + "channels: []\n").engine.store.cipher().sealing is False


def test_encryption_problems_name_their_yaml_path(tmp_path):
    """A missing key file, a bad key, an unset variable, an unknown current key: each at its path."""
    found = {
        (path, message)
        for path, _, message in problems(
            ENCRYPTION.format(current="k2"), base_dir=tmp_path, environ={"K2_KEY": "not base64!"}
        )
    }
    assert found == {
        ("engine.store.encryption.keys.k1", "cannot read the key file: No such file or directory"),
        (
            "engine.store.encryption.keys.k2",
            "a key must be 32 bytes written in base64 (e.g. `hl7engine new-key`)",
        ),
        ("engine.store.encryption.index", "the environment variable INDEX_KEY is not set"),
    }
    both = problems(
        "engine: {store: {encryption: {key: k3, index: {env: X, file: y}, keys: {a: {env: X}}}}}\n"
        "listeners: []\nchannels: []\n",
        environ={"X": _key(b"x")},
    )
    assert [(path, message) for path, _, message in both] == [
        ("engine.store.encryption.index", "give exactly one of file or env")
    ]
    unknown = problems(
        "engine: {store: {encryption: {key: k3, index: {env: X}, keys: {a: {env: X}}}}}\n"
        "listeners: []\nchannels: []\n",
        environ={"X": _key(b"x")},
    )
    assert [(path, message) for path, _, message in unknown] == [
        ("engine.store.encryption", "key 'k3' is not among keys: a")
    ]


CLUSTER = """\
engine:
  store:
    url: {url}
  cluster:
    node: node-a
    wake_host: {wake_host}
    lease_seconds: 6
    renew_seconds: {renew}
listeners: []
channels: []
"""


def test_a_cluster_is_a_postgresql_store_with_an_address_the_other_nodes_reach():
    """engine.cluster: refused on SQLite, with an unspecified wake_host, or rare renewals (at their paths)."""
    config = parse(CLUSTER.format(url="postgresql+psycopg://h/db", wake_host="10.0.0.5", renew=2))
    assert (config.engine.cluster.node, config.engine.cluster.renew_every) == ("node-a", 2.0)
    assert parse(CLUSTER.format(url="postgresql+psycopg://h/db", wake_host="node-a.lan", renew="null"))
    found = [
        problem
        for text in (
            CLUSTER.format(url="sqlite:///x.db", wake_host="127.0.0.1", renew=2),
            CLUSTER.format(url="postgresql+psycopg://h/db", wake_host="0.0.0.0", renew=2),
            CLUSTER.format(url="postgresql+psycopg://h/db", wake_host="'::'", renew=2),
            CLUSTER.format(url="postgresql+psycopg://h/db", wake_host="10.0.0.5", renew=4),
        )
        for problem in problems(text)
    ]
    expected = [
        ("engine.cluster", 4, "several nodes share a PostgreSQL store"),
        ("engine.cluster.wake_host", 6, "0.0.0.0 is no address another node can send to"),
        ("engine.cluster.wake_host", 6, ":: is no address another node can send to"),
        ("engine.cluster", 4, "renew_seconds (4.0) must be at most half of lease_seconds (6.0)"),
    ]
    assert [(path, line) for path, line, _ in found] == [(path, line) for path, line, _ in expected]
    for (_, _, message), (_, _, start) in zip(found, expected, strict=True):
        assert message.startswith(start), message


def test_a_fhir_destination_is_configured_and_its_problems_located():
    """type: fhir takes its keys; an unknown zone or key is reported at its YAML path."""
    channel = """\
    channels:
      - name: adt
        source: pms
        accept: {types: [ADT]}
        destinations:
          - name: fhir
            type: fhir
            url: https://fhir.example/r4
            time_zone: %s
    """
    config = parse(LISTENER + textwrap.dedent(channel % "Europe/Berlin"))
    [destination] = config.channels[0].destinations
    assert (destination.type, destination.url, destination.time_zone) == (
        "fhir",
        "https://fhir.example/r4",
        "Europe/Berlin",
    )
    found = problems(LISTENER + textwrap.dedent(channel % "Nowhere/Land" + "        charset: utf-8\n"))
    assert [(path, line) for path, line, _ in found] == [
        ("channels[0].destinations[0].time_zone", 13),
        ("channels[0].destinations[0].charset", 14),
    ]
