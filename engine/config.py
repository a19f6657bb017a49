"""channels.yaml -> frozen, typed configuration objects; all problems reported at once, with path and line.

``engine.configyaml`` reads the YAML as plain data with the line of every place, pydantic turns
the mapping into typed frozen models, and the checks between parts of the file follow; a
problem reads ``channels.yaml:12: channels[2].accept.types[0]: unknown key 'typez'``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAMLError

from engine.channels.alertspec import AlertRule
from engine.channels.spec import ChannelConfig
from engine.configengine import (
    EncryptionSettings,
    EngineSettings,
    HttpSettings,
    KeySource,
    ServerEndpoint,
    StoreSettings,
)
from engine.configtypes import CertificateFile, Frozen, Name, PrivateKeyFile, Seconds, resolve_path
from engine.configtypes import check_not_empty as _check_not_empty
from engine.configyaml import (
    ConfigProblem,
    Loc,
    format_path,
    read_config_text,
    read_document,
    validation_problems,
    yaml_error,
)
from engine.errors import ConfigError
from engine.listeners.admission import Network
from engine.listeners.endpoints import Bind, bind_of
from engine.listeners.tls import key_fits_certificate
from engine.store.retention import RetentionPolicy
from engine.transforms.hatch import import_target, importing_from
from engine.transforms.inputs import InputFile
from engine.transforms.lookup import LookupTable, load_tables
from engine.transforms.spec import TableSpec, TransformSpec
from engine.transforms.transforms import check_transforms

__all__ = [
    "Config",
    "ConfigProblem",
    "EncryptionSettings",
    "EngineSettings",
    "HttpSettings",
    "KeySource",
    "ListenerConfig",
    "ListenerTls",
    "StoreSettings",
    "load_config",
    "parse_config",
]


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a channels.yaml file; relative paths in it resolve against its folder."""
    text, source_path = read_config_text(path)
    return _parse(text, str(path), source_path.parent, source_path, environ)


def parse_config(
    text: str,
    source: str = "<string>",
    *,
    base_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate configuration text; relative paths resolve against ``base_dir`` (default: working folder)."""
    return _parse(text, source, Path(base_dir or ".").absolute(), None, environ)


# ---------------------------------------------------------------------------------------------------------
# Field types


def _check_network(value: Any) -> Network:
    # strict: 10.0.0.1/8 is a typing slip for 10.0.0.0/8 or 10.0.0.1/32, not a network
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise ValueError(f"must be an IP network such as 10.0.0.0/8 or an address ({exc})") from None


AllowedNetwork = Annotated[Network, BeforeValidator(_check_network)]


# ---------------------------------------------------------------------------------------------------------
# Models


class ListenerTls(Frozen):
    """TLS on an MLLP listener: our certificate and key; the CA(s) of client certificates for mutual TLS."""

    cert_file: CertificateFile  # our certificate, optionally followed by the intermediates of its chain
    key_file: PrivateKeyFile
    client_ca_file: CertificateFile | None = None
    require_client_certificate: bool | None = None  # None: required exactly when client_ca_file is given

    @model_validator(mode="after")
    def _key_fits_the_certificate(self) -> ListenerTls:
        if not key_fits_certificate(self.key_file, self.cert_file):
            raise ValueError(f"{self.key_file} is not the private key of the certificate in {self.cert_file}")
        return self

    @model_validator(mode="after")
    def _client_certificates(self) -> ListenerTls:
        if self.require_client_certificate is None:
            object.__setattr__(self, "require_client_certificate", self.client_ca_file is not None)
        elif self.require_client_certificate and self.client_ca_file is None:
            raise ValueError("require_client_certificate needs client_ca_file (the CA that signs them)")
        return self


class ListenerConfig(Frozen):
    """An inbound MLLP listener (one item of ``listeners``)."""

    name: Name
    type: Literal["mllp"] = "mllp"
    endpoint: ServerEndpoint
    tls: ListenerTls | None = None
    # None: any peer; else only peers whose address lies in one of these networks
    allowed_networks: Annotated[tuple[AllowedNetwork, ...], AfterValidator(_check_not_empty)] | None = None
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_frame_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 4 * 1024 * 1024
    frame_timeout_seconds: Seconds | None = 60.0
    idle_timeout_seconds: Seconds | None = 300.0
    # MSH-11.1 values taken; None takes any (real senders use values outside table 0103, e.g. N).
    processing_ids: (
        Annotated[tuple[Annotated[str, Field(pattern=r"^[A-Z]$")], ...], AfterValidator(_check_not_empty)]
        | None
    ) = None
    honour_accept_ack_type: bool = False

    @model_validator(mode="after")
    def _transport_fits_the_endpoint(self) -> ListenerConfig:
        kind = self.endpoint.split(":", 1)[0]
        if kind == "ssl":
            # Twisted's ssl: puts TLS outside the listener: no client certificates, no refusal before TLS.
            raise ValueError("use a tcp: endpoint with a tls: block (an ssl: endpoint cannot check clients)")
        if self.allowed_networks is not None and kind == "unix":
            raise ValueError("allowed_networks needs a network endpoint (tcp: or tcp6:), not unix:")
        return self


class FileListenerConfig(Frozen):
    """A directory polled for files of HL7 messages (``listeners`` item with ``type: file``)."""

    name: Name
    type: Literal["file"]
    directory: Path
    pattern: str = "*.hl7"
    poll_seconds: Seconds = 5.0
    min_age_seconds: Annotated[float, Field(ge=0)] = 1.0  # leave files alone while they may still be written
    done_directory: Path | None = None  # default <directory>/done
    error_directory: Path | None = None  # default <directory>/error
    processing_ids: (
        Annotated[tuple[Annotated[str, Field(pattern=r"^[A-Z]$")], ...], AfterValidator(_check_not_empty)]
        | None
    ) = None
    honour_accept_ack_type: bool = False  # nobody to answer; kept so intake treats every source alike

    @field_validator("directory", "done_directory", "error_directory")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else resolve_path(value, info)

    @model_validator(mode="after")
    def _default_folders(self) -> FileListenerConfig:
        if self.done_directory is None:
            object.__setattr__(self, "done_directory", self.directory / "done")
        if self.error_directory is None:
            object.__setattr__(self, "error_directory", self.directory / "error")
        return self


def _listener_type(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "mllp")
    return getattr(value, "type", "mllp")


AnyListener = Annotated[
    Annotated[ListenerConfig, Tag("mllp")] | Annotated[FileListenerConfig, Tag("file")],
    Discriminator(_listener_type),
]


class Config(Frozen):
    """The whole validated configuration; build it with load_config() or parse_config()."""

    engine: EngineSettings = Field(default_factory=dict, validate_default=True)
    listeners: tuple[AnyListener, ...]
    channels: tuple[ChannelConfig, ...]
    tables: dict[Name, TableSpec] = Field(default_factory=dict)
    alerts: tuple[AlertRule, ...] = ()

    _source_path: Path | None = PrivateAttr(default=None)
    _base_dir: Path = PrivateAttr(default=Path("."))
    _tables: dict[str, LookupTable] = PrivateAttr(default_factory=dict)
    _modules: dict[str, InputFile] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _remember_source(self, info: ValidationInfo) -> Config:
        self._source_path = (info.context or {}).get("source_path")
        self._base_dir = Path((info.context or {}).get("base_dir", Path(".")))
        return self

    @property
    def base_dir(self) -> Path:
        """The folder relative paths count from: the config file's, or the working folder."""
        return self._base_dir

    @property
    def source_path(self) -> Path | None:
        """The absolute path of the file this came from; None when parsed from a string."""
        return self._source_path

    @property
    def lookup_tables(self) -> Mapping[str, LookupTable]:
        """The tables as read when this config was loaded (a CSV file once, with its hash)."""
        return self._tables

    def summary(self) -> dict:
        """What runs, for people (the console's config view): names, kinds and shapes, never a secret."""
        http = self.engine.http
        return {
            "source": str(self.source_path) if self.source_path is not None else None,
            "listeners": [
                {
                    "name": listener.name,
                    "type": listener.type,
                    "where": str(listener.directory if listener.type == "file" else listener.endpoint),
                }
                for listener in self.listeners
            ],
            "channels": [
                {
                    "name": channel.name,
                    "description": channel.description,
                    "enabled": channel.enabled,
                    "source": channel.source,
                    "filters": len(channel.filters),
                    "transforms": len(channel.transforms),
                    "destinations": [
                        {"name": destination.name, "type": destination.type}
                        for destination in channel.destinations
                    ],
                }
                for channel in self.channels
            ],
            "tables": sorted(self.tables),
            "users": [
                {"name": name, "role": user.role}
                for name, user in sorted((http.users if http else {}).items())
            ],
        }

    @property
    def inputs(self) -> tuple[InputFile, ...]:
        """The files this config read besides its own (CSV tables, ``python:`` modules), with their hashes."""
        tables = (table.source for table in self._tables.values() if table.source is not None)
        return tuple(sorted((*tables, *self._modules.values()), key=lambda i: (i.kind, i.name)))

    def inputs_of(self, channel: ChannelConfig) -> dict[str, object]:
        """What a channel's transforms read besides the channel's own config, to compare across a reload.

        The tables it maps through (their spec and file hash) and the modules it calls (their hash).
        """
        used: dict[str, object] = {}
        for _, specs in transform_lists(channel):
            for spec in specs:
                if spec.kind == "map" and spec.map_.table in self.tables:
                    table = self._tables.get(spec.map_.table)
                    source = table.source if table is not None else None
                    used[f"table {spec.map_.table}"] = (self.tables[spec.map_.table], source)
                elif spec.kind == "python":
                    module = spec.python.partition(":")[0]
                    used[f"module {module}"] = self._modules.get(module)
        return used

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the message store: ``engine.store.url`` or SQLite under data_dir."""
        return self.engine.store_url

    def retention_policy(self) -> RetentionPolicy:
        """How long each channel's message content is kept (``retention_days``), and the store's default."""
        return RetentionPolicy(
            {c.name: c.retention_days for c in self.channels if c.retention_days is not None},
            self.engine.store.retention_days,
        )

    @cached_property
    def _listeners_by_name(self) -> dict[str, ListenerConfig]:
        return {listener.name: listener for listener in self.listeners}

    @cached_property
    def _enabled_channels_by_source(self) -> dict[str, tuple[ChannelConfig, ...]]:
        return {
            name: tuple(c for c in self.channels if c.enabled and c.source == name)
            for name in self._listeners_by_name
        }

    def listener(self, name: str) -> ListenerConfig:
        """The listener with this name; KeyError if there is none."""
        return self._listeners_by_name[name]

    def channels_for(self, listener_name: str) -> tuple[ChannelConfig, ...]:
        """The enabled channels fed by this listener, in file order; KeyError for an unknown listener."""
        return self._enabled_channels_by_source[listener_name]


# ---------------------------------------------------------------------------------------------------------
# Loading: YAML -> plain data (engine.configyaml) -> models -> cross-checks


def _listed(data: Any, key: str) -> Iterator[tuple[Loc, dict[str, Any]]]:
    """The mapping items of a top-level list, with their place."""
    items = data.get(key) if isinstance(data, dict) else None
    for index, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict):
            yield (key, index), item


def _unique_names(data: Any, key: str, kind: str, problems: list[tuple[Loc, str]]) -> dict[str, Loc]:
    """The first place of every name in a top-level list; a repeated name is a problem."""
    first: dict[str, Loc] = {}
    for loc, item in _listed(data, key):
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(
                (loc + ("name",), f"{kind} name {name!r} is already used by {format_path(first[name])}")
            )
        else:
            first[name] = loc
    return first


def _endpoints(data: Any) -> Iterator[tuple[Loc, Any]]:
    engine = data.get("engine") if isinstance(data, dict) else None
    http = engine.get("http") if isinstance(engine, dict) else None
    if isinstance(http, dict) and "endpoint" in http:
        yield ("engine", "http", "endpoint"), http["endpoint"]
    for loc, listener in _listed(data, "listeners"):
        if "endpoint" in listener:
            yield loc + ("endpoint",), listener["endpoint"]


def _cross_check(data: Any) -> list[tuple[Loc, str]]:
    """Problems between parts of the file: repeated names, shared ports, channels fed by no listener."""
    problems: list[tuple[Loc, str]] = []
    listener_names = _unique_names(data, "listeners", "listener", problems)
    _unique_names(data, "channels", "channel", problems)

    taken: list[tuple[Loc, Bind]] = []
    for loc, endpoint in _endpoints(data):
        try:
            bind = bind_of(endpoint) if isinstance(endpoint, str) else None
        except ValueError:
            continue  # model validation reports it
        if bind is None:
            continue
        clash = next((other_loc for other_loc, other in taken if bind.clashes(other)), None)
        if clash is not None:
            problems.append((loc, f"{bind} is already used by {format_path(clash)}"))
        taken.append((loc, bind))

    if isinstance(data, dict) and isinstance(data.get("listeners"), list):
        known = ", ".join(listener_names) or "(none)"
        for loc, channel in _listed(data, "channels"):
            source = channel.get("source")
            if isinstance(source, str) and source not in listener_names:
                problems.append((loc + ("source",), f"no listener named {source!r}; known: {known}"))
    return problems


def transform_lists(channel: ChannelConfig) -> Iterator[tuple[Loc, tuple[TransformSpec, ...]]]:
    """A channel's transforms, then each destination's, with their place within the channel item."""
    yield ("transforms",), channel.transforms
    for j, destination in enumerate(channel.destinations):
        yield ("destinations", j, "transforms"), destination.transforms


def _check_stages(config: Config) -> list[tuple[Loc, str]]:
    """Problems between the stages and the rest: tables that cannot be read, unknown table names,
    Python transforms that do not import, destination names and channel hand-offs.

    Keeps the tables read and the modules imported on ``config``, with their hashes.
    """
    config._tables, problems = load_tables(config.tables, config.base_dir)
    table_names = set(config.tables)
    channel_names = {c.name for c in config.channels}
    for i, channel in enumerate(config.channels):
        for loc, specs in transform_lists(channel):
            with importing_from(config.base_dir):  # python: modules beside the config import
                found = check_transforms(specs, path_loc=("channels", i, *loc), table_names=table_names)
            problems += found
            if not found:
                config._modules |= _modules_of(specs)
        seen: dict[str, int] = {}
        for j, destination in enumerate(channel.destinations):
            loc = ("channels", i, "destinations", j)
            if destination.name in seen:
                problems.append(
                    (
                        loc + ("name",),
                        f"destination name {destination.name!r} is already used by"
                        f" channels[{i}].destinations[{seen[destination.name]}]",
                    )
                )
            seen.setdefault(destination.name, j)
            if destination.type == "channel":
                if destination.channel == channel.name:
                    problems.append((loc + ("channel",), "a channel cannot hand messages to itself"))
                elif destination.channel not in channel_names:
                    problems.append(
                        (
                            loc + ("channel",),
                            f"no channel named {destination.channel!r};"
                            f" known: {', '.join(sorted(channel_names))}",
                        )
                    )
    return problems


def _check_alerts(data: Any) -> list[tuple[Loc, str]]:
    """Alert rules naming a channel, destination or listener the file does not have; a name used twice.

    Read from the document, so these come with the rules' own problems.
    """
    problems: list[tuple[Loc, str]] = []
    _unique_names(data, "alerts", "alert", problems)
    channels = {
        channel.get("name"): {d.get("name") for _, d in _listed(channel, "destinations")}
        for _, channel in _listed(data, "channels")
    }
    listeners = {listener.get("name") for _, listener in _listed(data, "listeners")}
    for loc, rule in _listed(data, "alerts"):
        channel, destination, listener = (rule.get(key) for key in ("channel", "destination", "listener"))
        if isinstance(channel, str) and channel not in channels:
            problems.append((loc + ("channel",), f"no channel named {channel!r}"))
        elif (
            isinstance(channel, str) and isinstance(destination, str) and destination not in channels[channel]
        ):
            problems.append(
                (loc + ("destination",), f"channel {channel!r} has no destination {destination!r}")
            )
        if isinstance(listener, str) and listener not in listeners:
            problems.append((loc + ("listener",), f"no listener named {listener!r}"))
    return problems


def _modules_of(specs: tuple[TransformSpec, ...]) -> dict[str, InputFile]:
    """The source files of the modules that checked ``python:`` transforms name, by module name."""
    targets = (import_target(spec.python) for spec in specs if spec.kind == "python")
    return {target.source.name: target.source for target in targets if target.source is not None}


def _parse(
    text: str, source: str, base_dir: Path, source_path: Path | None, environ: Mapping[str, str] | None
) -> Config:
    try:
        document = read_document(text, os.environ if environ is None else environ)
    except YAMLError as error:
        line, message = yaml_error(error)
        raise ConfigError([ConfigProblem("", line, message, source)]) from None

    # A value whose substitution failed would only produce follow-on errors: report the cause alone.
    unusable = {loc for loc, _ in document.problems}
    found: list[tuple[Loc, str]] = []
    config = None
    try:
        config = Config.model_validate(
            document.data,
            context={
                "base_dir": base_dir,
                "source_path": source_path,
                "environ": os.environ if environ is None else environ,
            },
        )
    except ValidationError as error:
        found += validation_problems(document.data, error)
    found += _cross_check(document.data) + _check_alerts(document.data)
    if config is not None:
        found += _check_stages(config)

    located = document.problems + [(loc, message) for loc, message in found if loc not in unusable]
    problems = [
        ConfigProblem(format_path(loc), document.line_of(loc), message, source)
        for loc, message in dict.fromkeys(located)
    ]
    if problems:
        raise ConfigError(sorted(problems, key=lambda problem: problem.line or 0))
    return config
