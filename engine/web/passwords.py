"""Password hashes of the web server's users: PBKDF2-SHA256, made by ``hl7engine hash-password``.

Plain functions without Twisted, so that the configuration loader can check a hash without
loading the web server. Hashing costs a fraction of a second of CPU on purpose: callers on the
reactor run ``verify_password`` on a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

__all__ = [
    "ALGORITHM",
    "DEFAULT_ITERATIONS",
    "check_password_hash",
    "decoy_hash",
    "hash_password",
    "redact_hashes",
    "verify_password",
]

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP's 2023 advice for PBKDF2-HMAC-SHA256
# A hash anywhere in a text (YAML or JSON): the salt runs to the next '$', the digest is base64.
_HASH_IN_TEXT = re.compile(ALGORITHM + r"\$[0-9]+\$[^$\s\"']+\$[A-Za-z0-9+/=]+")
REDACTED = f"{ALGORITHM}$<redacted>"


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: str | None = None) -> str:
    """``pbkdf2_sha256$iterations$salt$hash`` (hash in base64) for ``engine.http.users``."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, not {iterations}")
    salt = salt or secrets.token_urlsafe(16)
    if not salt or "$" in salt:
        raise ValueError("a salt must be non-empty and must not contain '$'")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def _split(encoded: str) -> tuple[int, str, bytes]:
    algorithm, iterations, salt, digest = encoded.split("$")
    if algorithm != ALGORITHM or not iterations.isdigit() or int(iterations) < 1 or not salt:
        raise ValueError(encoded)
    salt.encode("ascii")
    return int(iterations), salt, base64.b64decode(digest, validate=True)


def check_password_hash(encoded: str) -> str:
    """``encoded`` when it is a hash ``hash_password`` could have made, else ValueError (config validator)."""
    try:
        _iterations, _salt, digest = _split(encoded)
    except (ValueError, UnicodeEncodeError):
        raise ValueError(
            "must be a password hash pbkdf2_sha256$iterations$salt$hash;"
            " make one with `hl7engine hash-password`"
        ) from None
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError(
            "the hash part must be the 32-byte SHA-256 digest in base64;"
            " make one with `hl7engine hash-password`"
        )
    return encoded


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the hash (constant-time comparison); a malformed hash matches nothing.

    Blocks: CPU-bound.
    """
    try:
        iterations, salt, expected = _split(encoded)
    except (ValueError, UnicodeEncodeError):
        return False
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode("ascii"), iterations)
    return hmac.compare_digest(actual, expected)


def decoy_hash(hashes: Iterable[str]) -> str:
    """A well-formed hash no password matches, as costly to check as the costliest of ``hashes``.

    Checked for an unknown user, so that timing does not tell which user names exist.
    """
    iterations = max((_split(encoded)[0] for encoded in hashes), default=DEFAULT_ITERATIONS)
    return f"{ALGORITHM}${iterations}$decoy${base64.b64encode(bytes(32)).decode('ascii')}"


def redact_hashes(text: str) -> str:
    """``text`` with every password hash replaced by ``pbkdf2_sha256$<redacted>``.

    For texts that are kept (the config history): a hash lets anyone who reads it guess
    passwords offline at their own pace.
    """
    return _HASH_IN_TEXT.sub(REDACTED, text)
