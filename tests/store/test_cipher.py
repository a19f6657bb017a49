"""engine.store.cipher: values sealed with AES-GCM under the current key, opened with any key known."""

from __future__ import annotations

import base64

import pytest

from engine.errors import StoreError
from engine.store.cipher import CLEAR, MARKER, TEXT_PREFIX, Cipher, new_key, read_key

OLD, NEW = b"o" * 32, b"n" * 32
MESSAGE = b"MSH|^~\\&|PMS|NORTH|EMR|HUB|20260101||ADT^A04|1|P|2.5.1\rPID|1||MRN1||Quixotl^Zed\r"


def test_sealed_bytes_open_and_say_their_key():
    """A sealed value starts with the marker, names its key, hides the content and opens to it."""
    cipher = Cipher({"k1": OLD}, "k1")
    sealed = cipher.seal(MESSAGE)
    assert sealed.startswith(MARKER) and b"Quixotl" not in sealed
    assert cipher.key_of(sealed) == "k1"
    assert cipher.open(sealed) == MESSAGE
    assert cipher.seal(MESSAGE) != sealed  # a fresh nonce each time


def test_clear_values_pass_through_and_none_stays_none():
    """Without keys nothing is sealed; a clear value is read as it is by any cipher."""
    assert CLEAR.seal(MESSAGE) == MESSAGE and not CLEAR.sealing
    assert Cipher({"k1": OLD}, "k1").open(MESSAGE) == MESSAGE
    assert Cipher({"k1": OLD}, "k1").key_of(MESSAGE) is None
    assert Cipher({"k1": OLD}, "k1").seal(None) is None


def test_rotation_reads_old_values_and_seals_with_the_new_key():
    """With a new current key, old values still open; new ones name the new key."""
    before = Cipher({"k1": OLD}, "k1").seal(MESSAGE)
    rotated = Cipher({"k1": OLD, "k2": NEW}, "k2")
    assert rotated.open(before) == MESSAGE
    assert rotated.key_of(rotated.seal(MESSAGE)) == "k2"


def test_a_value_of_a_key_not_configured_is_refused():
    """Opening a value whose key was removed (or with no keys at all) is a StoreError naming the key."""
    sealed = Cipher({"k1": OLD}, "k1").seal(MESSAGE)
    with pytest.raises(StoreError, match="'k1', which is not configured"):
        Cipher({"k2": NEW}, "k2").open(sealed)
    with pytest.raises(StoreError, match="not configured"):
        CLEAR.open(sealed)


@pytest.mark.parametrize("position", [2, 4, 10, 40, -1])
def test_a_changed_byte_is_detected(position):
    """Authenticated: changing any byte (header, nonce, ciphertext, tag) makes the value refuse to open."""
    cipher = Cipher({"k1": OLD}, "k1")
    sealed = bytearray(cipher.seal(MESSAGE))
    sealed[position] ^= 0x01
    with pytest.raises(StoreError):
        cipher.open(bytes(sealed))


def test_text_is_sealed_as_text():
    """Text is sealed to ASCII text after a prefix, and opens to the same text (any character)."""
    cipher = Cipher({"k1": OLD}, "k1")
    sealed = cipher.seal_text("Zoë Quixotl")
    assert sealed.startswith(TEXT_PREFIX) and sealed.isascii() and "Quixotl" not in sealed
    assert cipher.open_text(sealed) == "Zoë Quixotl"
    assert cipher.key_of(sealed) == "k1"
    assert cipher.open_text("plain") == "plain"


def test_keys_are_read_from_base64():
    """A key is 32 bytes of base64, standard or URL-safe, with spaces or a newline around."""
    key = new_key()
    assert read_key(f"  {key}\n") == base64.b64decode(key)
    assert read_key(key.replace("+", "-").replace("/", "_").encode()) == base64.b64decode(key)
    with pytest.raises(ValueError, match="32 bytes"):
        read_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="base64"):
        read_key("not a key!")


def test_a_cipher_needs_a_known_current_key():
    """Keys without a current one, a current one not among them, or a key of the wrong size are refused."""
    with pytest.raises(ValueError):
        Cipher({"k1": OLD})
    with pytest.raises(ValueError):
        Cipher({"k1": OLD}, "k2")
    with pytest.raises(ValueError):
        Cipher({"k1": b"short"}, "k1")


def test_rotate_swaps_the_keys_of_a_shared_cipher_but_never_its_index_key():
    """A cipher rotated in place seals with the new current key and opens old values; the index stays."""
    shared = Cipher({"k1": OLD}, "k1", index=b"i" * 32)
    before, name_key = shared.seal(MESSAGE), shared.blind("QUIXOTL")
    shared.rotate(Cipher({"k1": OLD, "k2": NEW}, "k2", index=b"i" * 32))
    assert shared.current == "k2" and shared.key_of(shared.seal(MESSAGE)) == "k2"
    assert shared.open(before) == MESSAGE and shared.blind("QUIXOTL") == name_key
    with pytest.raises(ValueError, match="index key"):
        shared.rotate(Cipher({"k2": NEW}, "k2", index=b"j" * 32))
    assert shared.current == "k2"
