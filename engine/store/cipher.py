"""Encryption at rest: content sealed with AES-256-GCM under a configured key, opened with any key known.

A sealed value says which key sealed it, so keys rotate without downtime: new values are sealed
with the current key, old ones open with the key they name, and ``rekey`` (``engine.store.rekey``)
seals old rows again with the current key. Bytes are sealed as::

    MARKER (2 bytes) | version (1) | key id length (1) | key id | nonce (12) | ciphertext and tag (16)

with everything before the nonce authenticated too (a key id cannot be swapped). Text is the
same sealed bytes in URL-safe base64 after ``TEXT_PREFIX``. A value without the marker is clear
(written before encryption was configured): it is read as it is, and ``rekey`` seals it.

The cipher travels with the SQLAlchemy engine (``engine_options`` when it is created, ``cipher_of``), so every
repository, the record and the CLI that share an engine seal and open the same way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.errors import StoreError

if TYPE_CHECKING:  # a cipher is made by the config, which store commands read without SQLAlchemy
    import sqlalchemy as sa

__all__ = [
    "BLIND",
    "BLIND_PREFIX",
    "CLEAR",
    "FIT",
    "KEY_BYTES",
    "MARKER",
    "SEALED",
    "TEXT_PREFIX",
    "Cipher",
    "cipher_of",
    "engine_options",
    "new_key",
    "read_key",
]

MARKER = b"\x00\xe5"
VERSION = 1
TEXT_PREFIX = "\x1bhl7e:"
KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_OPTION = "hl7engine_cipher"
#: ``Column.info`` key of a column whose values are sealed (bytes, or text in a Text column).
SEALED = "sealed"
#: ``Column.info`` key of a sealed Text column's length for its clear text (what fit_text cuts it to).
FIT = "fit"
#: ``Column.info`` key of a search key column: it holds a keyed hash of its text (``Cipher.blind``).
BLIND = "blind"
BLIND_PREFIX = "\x1bhk:"


def read_key(text: str | bytes) -> bytes:
    """A key as a file or variable holds it: 32 bytes in base64 (standard or URL-safe), spaces ignored."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("a key must be 32 bytes written in base64 (e.g. `hl7engine new-key`)") from None
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(cleaned, validate=True)
    except binascii.Error:
        raise ValueError("a key must be 32 bytes written in base64 (e.g. `hl7engine new-key`)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key must be {KEY_BYTES} bytes, this one has {len(key)}")
    return key


def new_key() -> str:
    """A fresh random key, in base64 as read_key takes it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


class Cipher:
    """Seals values with the ``current`` key and opens values sealed with any of ``keys`` (id -> 32 bytes).

    Without keys it seals nothing (the CLEAR cipher), and refuses to open a sealed value.
    ``index`` is the key of ``blind``, the keyed hash of search keys (never rotated); without it
    search keys stay clear.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes] | None = None,
        current: str | None = None,
        *,
        index: bytes | None = None,
    ):
        keys = dict(keys or {})
        if (current is None) != (not keys):
            raise ValueError("a cipher needs a current key exactly when it has keys")
        if current is not None and current not in keys:
            raise ValueError(f"the current key {current!r} is not among the keys")
        aeads = {}
        if keys:  # cryptography is imported by a store with keys only: a clear one starts without it
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        for key_id, key in keys.items():
            encoded = key_id.encode("ascii")
            if not 0 < len(encoded) < 256:
                raise ValueError(f"a key id must be 1 to 255 ASCII characters, not {key_id!r}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
            aeads[encoded] = AESGCM(key)
        header = None
        if current is not None:
            header = MARKER + bytes([VERSION, len(current)]) + current.encode("ascii")
        # (keys by id, the current key's header, its id): one value, so rotate swaps it whole.
        self._keys = (aeads, header, current)
        self._index = index

    @property
    def current(self) -> str | None:
        """The id of the key new values are sealed with; None when nothing is sealed."""
        return self._keys[2]

    @property
    def sealing(self) -> bool:
        """Whether new values are sealed (a current key is configured)."""
        return self._keys[1] is not None

    def rotate(self, other: Cipher) -> None:
        """Take ``other``'s keys and current key from now on, in every thread (a reload of the config).

        The index key cannot change (the stored search keys would no longer match): ValueError.
        """
        if other._index != self._index:
            raise ValueError("the index key cannot change while the engine runs")
        self._keys = other._keys

    def seal(self, data: bytes | None) -> bytes | None:
        """``data`` sealed with the current key (as it is without one); None stays None."""
        aeads, header, _ = self._keys
        if data is None or header is None:
            return data
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + aeads[header[4:]].encrypt(nonce, data, header)

    def open(self, stored: bytes | None) -> bytes | None:
        """The clear bytes of a stored value: opened if sealed, as it is if clear; None stays None.

        StoreError when it was sealed with a key not configured, or its bytes were changed.
        """
        if stored is None or not stored.startswith(MARKER):
            return stored
        header, key_id = self._split(stored)
        aead = self._keys[0].get(key_id)
        name = key_id.decode("ascii", "replace")
        if aead is None:
            raise StoreError(f"a value is sealed with key {name!r}, which is not configured")
        from cryptography.exceptions import InvalidTag  # imported already by the key's AESGCM

        end = len(header) + _NONCE_BYTES
        try:
            return aead.decrypt(stored[len(header) : end], stored[end:], header)
        except InvalidTag:
            raise StoreError(f"a value sealed with key {name!r} does not open: changed or damaged") from None

    def blind(self, text: str | None) -> str | None:
        """A search key as stored: its keyed hash (HMAC-SHA256 under ``index``), equal for equal keys.

        As it is without an index key; a value already blind stays as it is (so fitting twice is harmless).
        """
        if text is None or self._index is None or text.startswith(BLIND_PREFIX):
            return text
        digest = hmac.new(self._index, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return BLIND_PREFIX + base64.urlsafe_b64encode(digest[:18]).decode("ascii")

    def seal_text(self, text: str | None) -> str | None:
        """``text`` sealed as text (TEXT_PREFIX and base64) with the current key; as it is without one."""
        if text is None or not self.sealing:
            return text
        sealed = self.seal(text.encode("utf-8", "surrogatepass"))
        return TEXT_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def open_text(self, stored: str | None) -> str | None:
        """The clear text of a stored text value (see open)."""
        if stored is None or not stored.startswith(TEXT_PREFIX):
            return stored
        try:
            sealed = base64.urlsafe_b64decode(stored[len(TEXT_PREFIX) :])
        except (binascii.Error, ValueError):
            raise StoreError("a sealed text value is damaged (not base64)") from None
        return self.open(sealed).decode("utf-8", "surrogatepass")

    def key_of(self, stored: bytes | str | None) -> str | None:
        """The id of the key that sealed a stored value; None for a clear value (or None)."""
        if isinstance(stored, str):
            if not stored.startswith(TEXT_PREFIX):
                return None
            try:
                stored = base64.urlsafe_b64decode(stored[len(TEXT_PREFIX) :])
            except (binascii.Error, ValueError):
                raise StoreError("a sealed text value is damaged (not base64)") from None
        if stored is None or not stored.startswith(MARKER):
            return None
        return self._split(stored)[1].decode("ascii", "replace")

    @staticmethod
    def _split(stored: bytes) -> tuple[bytes, bytes]:
        """(header, key id) of a sealed value."""
        if len(stored) < 4 or stored[2] != VERSION:
            raise StoreError("a sealed value has an unknown format version")
        end = 4 + stored[3]
        if len(stored) < end + _NONCE_BYTES + 16:
            raise StoreError("a sealed value is cut short")
        return stored[:end], stored[4:end]


CLEAR = Cipher()


def engine_options(cipher: Cipher) -> dict:
    """The execution options that give an engine (``create_engine``) and its connections ``cipher``."""
    return {_OPTION: cipher}


def cipher_of(bind: sa.Engine | sa.Connection) -> Cipher:
    """The cipher an engine or connection was created with (engine_options); CLEAR when none."""
    return bind.get_execution_options().get(_OPTION, CLEAR)
