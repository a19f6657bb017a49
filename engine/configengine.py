"""The engine-wide settings of channels.yaml (the ``engine`` block): identity, store, keys, web server.

``engine.config`` builds the whole configuration; these are its models for the ``engine`` block,
checked by pydantic with the same path-and-line problems.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from engine.configtypes import Frozen, HL7Text, Name, Seconds, check_version, resolve_path
from engine.configtypes import check_not_empty as _check_not_empty
from engine.listeners.endpoints import check_endpoint
from engine.store.cipher import Cipher, read_key
from engine.store.defaults import DEFAULT_LEASE_SECONDS, WAL_MAX_BYTES
from engine.web.passwords import check_password_hash
from engine.web.roles import ADMIN

__all__ = [
    "ClusterSettings",
    "EncryptionSettings",
    "EngineSettings",
    "HttpSettings",
    "KeySource",
    "ServerEndpoint",
    "StoreSettings",
    "WebUser",
]

ServerEndpoint = Annotated[str, AfterValidator(check_endpoint)]


def _check_charset(value: str) -> str:
    # codecs.lookup() alone also accepts bytes-to-bytes codecs (base64, hex) that cannot decode a message,
    # and decoding b"" skips the lookup: decode one byte.
    try:
        b"\x00".decode(value)
    except LookupError:
        raise ValueError(f"{value!r} is not a Python text codec (see the codecs module)") from None
    except UnicodeDecodeError:
        pass  # a real text codec that needs more than one byte (utf-16)
    return value


def _reject_number(value: Any) -> Any:
    # YAML reads 2.5 as a float and 2.10 as 2.1: a version must be written as a string.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f'must be a quoted string such as "2.5" (YAML read {value!r} as a number)')
    return value


def _empty_to_none(value: Any) -> Any:
    # Lets `url: ${DATABASE_URL:-}` fall back to the default SQLite file.
    return None if value == "" else value


def _check_url(value: str | None) -> str | None:
    if value is not None and "://" not in value:
        raise ValueError(
            f"must be an SQLAlchemy URL such as postgresql+psycopg://user@host/db (got {value!r})"
        )
    return value


class KeySource(Frozen):
    """Where one encryption key is read from: a file or an environment variable, never the YAML itself."""

    file: Path | None = None
    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None

    _key: bytes = PrivateAttr(default=b"")

    @field_validator("file")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _read(self, info: ValidationInfo) -> KeySource:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        if self.file is not None:
            try:
                text = self.file.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read the key file: {exc.strerror or exc}") from None
        else:
            environ = (info.context or {}).get("environ", os.environ)
            if self.env not in environ:
                raise ValueError(f"the environment variable {self.env} is not set")
            text = environ[self.env]
        self._key = read_key(text)
        return self

    @property
    def key(self) -> bytes:
        """The 32 key bytes read."""
        return self._key


class EncryptionSettings(Frozen):
    """Encryption at rest (``engine.store.encryption``): message content and the record's person data."""

    key: Name  # the id of the key new values are sealed with
    keys: Annotated[dict[Name, KeySource], AfterValidator(_check_not_empty)]
    index: KeySource  # the key of the record's name search keys (keyed hashes): never rotated

    @model_validator(mode="after")
    def _current_known(self) -> EncryptionSettings:
        if self.key not in self.keys:
            raise ValueError(f"key {self.key!r} is not among keys: {', '.join(self.keys)}")
        return self

    def cipher(self) -> Cipher:
        """The cipher that seals with ``key`` and opens with any of ``keys``."""
        return Cipher(
            {key_id: source.key for key_id, source in self.keys.items()}, self.key, index=self.index.key
        )


class StoreSettings(Frozen):
    """Where and how durably messages are stored (``engine.store``)."""

    url: Annotated[str | None, BeforeValidator(_empty_to_none), AfterValidator(_check_url)] = None
    durability: Literal["process", "power_loss"] = "process"
    lock_timeout_seconds: Seconds = 5.0
    max_batch: Annotated[int, Field(ge=1, le=100_000)] = 500
    # SQLite: the WAL is truncated once past half of this (engine/store/wal.py)
    wal_max_bytes: Annotated[int, Field(ge=1 << 20, le=1 << 40)] = WAL_MAX_BYTES
    # Retention: content older than this is removed from every channel without retention_days of
    # its own (and from messages no channel took); None keeps it forever.
    retention_days: Annotated[int, Field(ge=1)] | None = None
    prune_every_seconds: Seconds = 3600.0  # how often the engine prunes, when anything has a retention
    prune_batch: Annotated[int, Field(ge=1, le=10_000)] = 200  # messages per transaction (and pages per step)

    encryption: EncryptionSettings | None = None

    def cipher(self) -> Cipher:
        """The store's cipher: ``encryption``'s, or one that seals nothing."""
        return Cipher() if self.encryption is None else self.encryption.cipher()


def _bare_hash_is_admin(value: Any) -> Any:
    # The form from before roles (name: hash) stays valid: such a user could do everything.
    return {"password": value, "role": ADMIN} if isinstance(value, str) else value


class WebUser(Frozen):
    """One user of the web server (``engine.http.users.<name>``)."""

    password: Annotated[str, AfterValidator(check_password_hash)]  # from `hl7engine hash-password`
    role: Literal["viewer", "operator", "admin"]


class HttpSettings(Frozen):
    """The web API, console and metrics server (``engine.http``)."""

    endpoint: ServerEndpoint
    # user name -> {password: hash, role}, or a bare hash (an admin); none: only /health and /metrics
    users: dict[Name, Annotated[WebUser, BeforeValidator(_bare_hash_is_admin)]] = Field(default_factory=dict)
    session_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    # Failed logins (wrong passwords) allowed in login_window_seconds, per user name and per client
    # address; past them the answer is 429 with Retry-After, without checking the password.
    login_failures_per_user: Annotated[int, Field(ge=1, le=10_000)] = 5
    login_failures_per_address: Annotated[int, Field(ge=1, le=100_000)] = 20
    login_window_seconds: Annotated[int, Field(ge=1, le=24 * 3600)] = 300
    # A request body or header block over these is refused (413, 431) before it is read into memory.
    max_body_bytes: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = 64 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024


def _check_wake_host(value: str) -> str:
    try:
        unspecified = ipaddress.ip_address(value).is_unspecified
    except ValueError:
        unspecified = False  # a host name: the other nodes resolve it
    if unspecified:
        raise ValueError(
            f"{value} is no address another node can send to: give this node's own address on the"
            " network the nodes share (it is registered for the others to wake this one)"
        )
    return value


def _default_node() -> str:
    return socket.gethostname().split(".")[0][:100] or "node"


class ClusterSettings(Frozen):
    """Several nodes on one PostgreSQL store (the optional ``engine.cluster`` block).

    Work is shared through leases in the store (``engine.channels.leases``): a channel's processing,
    each destination's queue and each scheduled job is held by one process at a time; a lease
    not renewed for ``lease_seconds`` (its node died) is taken over by another process.
    """

    node: Annotated[str, Field(min_length=1, max_length=100)] = Field(default_factory=_default_node)
    lease_seconds: Annotated[float, Field(ge=1, le=3600)] = DEFAULT_LEASE_SECONDS
    # How often a process renews its leases and heartbeat and looks for free work: a third of the lease.
    renew_seconds: Annotated[float, Field(gt=0, le=1200)] | None = None
    # Where this node hears wake-ups from the others (UDP): an address the other nodes reach.
    wake_host: Annotated[str, Field(min_length=1), AfterValidator(_check_wake_host)] = "127.0.0.1"
    wake_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: any free port, registered in the store
    # Without a wake-up (a lost datagram), how often a process looks at the store for work anyway.
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0

    @model_validator(mode="after")
    def _renew_within_lease(self) -> ClusterSettings:
        if self.renew_seconds is not None and self.renew_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"renew_seconds ({self.renew_seconds}) must be at most half of lease_seconds"
                f" ({self.lease_seconds}): a lease must survive one missed renewal"
            )
        return self

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: ``renew_seconds``, or a third of the lease."""
        return self.renew_seconds if self.renew_seconds is not None else self.lease_seconds / 3


class EngineSettings(Frozen):
    """Engine-wide settings (the optional ``engine`` block)."""

    application: HL7Text = "HL7ENGINE"
    facility: HL7Text = "HUB"
    data_dir: Path = Field(default=Path("data"), validate_default=True)
    default_charset: Annotated[str, AfterValidator(_check_charset)] = "utf-8"
    default_version: Annotated[str, BeforeValidator(_reject_number), AfterValidator(check_version)] = "2.5.1"
    store: StoreSettings = Field(default_factory=StoreSettings)
    http: HttpSettings | None = None
    cluster: ClusterSettings | None = None
    shutdown_timeout_seconds: Seconds = 30.0

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the message store: ``store.url`` or SQLite under data_dir."""
        return self.store.url or f"sqlite:///{self.data_dir}/hl7engine.db"

    @field_validator("data_dir")
    @classmethod
    def _resolve_data_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("cluster")
    @classmethod
    def _cluster_on_postgresql(cls, value: ClusterSettings | None, info: ValidationInfo):
        store = info.data.get("store")
        url = store.url if store is not None else None
        if value is not None and (url is None or url.startswith("sqlite")):
            raise ValueError(
                "several nodes share a PostgreSQL store: set engine.store.url to a postgresql+psycopg://"
                " URL (on one machine with SQLite, use `hl7engine run --workers N` instead)"
            )
        return value
