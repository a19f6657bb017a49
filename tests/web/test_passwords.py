"""engine/web/passwords.py: PBKDF2-SHA256 hashes of the web server's users, made, checked and verified."""

from __future__ import annotations

import pytest

from engine.web.passwords import (
    DEFAULT_ITERATIONS,
    check_password_hash,
    decoy_hash,
    hash_password,
    redact_hashes,
    verify_password,
)

# PBKDF2-HMAC-SHA256("password", "salt", 1 iteration), the published test vector, in base64.
VECTOR = "Eg+2z/z4syxD5yJSVsT4N6hlSMkszDVICAWYfLcL4Xs="


def test_password_hashes_round_trip():
    """hash_password makes the documented format; verify_password accepts only the right password."""
    encoded = hash_password("s3cret", iterations=1000, salt="abc")
    algorithm, iterations, salt, _digest = encoded.split("$")
    assert (algorithm, iterations, salt) == ("pbkdf2_sha256", "1000", "abc")
    assert verify_password("s3cret", encoded)
    assert not verify_password("S3cret", encoded)
    assert not verify_password("s3cret", "pbkdf2_sha256$x$abc$AAAA")
    assert check_password_hash(encoded) == encoded


def test_a_hash_is_pbkdf2_sha256_of_the_password_and_salt():
    """The digest part is PBKDF2-HMAC-SHA256 of the password and the salt (the published test vector)."""
    assert hash_password("password", iterations=1, salt="salt") == f"pbkdf2_sha256$1$salt${VECTOR}"


def test_each_hash_gets_its_own_random_salt():
    """Without a salt given, two hashes of one password differ and both verify."""
    first, second = hash_password("pw", iterations=1), hash_password("pw", iterations=1)
    assert first != second
    assert verify_password("pw", first) and verify_password("pw", second)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"iterations": 0}, "iterations must be at least 1"),
        ({"salt": "a$b"}, "must not contain '\\$'"),
    ],
)
def test_hash_password_refuses_what_it_cannot_encode(options, reason):
    """No iterations, or a salt holding the separator, is a ValueError saying why."""
    with pytest.raises(ValueError, match=reason):
        hash_password("pw", **options)


@pytest.mark.parametrize(
    "encoded",
    [
        "s3cret",
        f"md5$1$salt${VECTOR}",
        f"pbkdf2_sha256$one$salt${VECTOR}",
        f"pbkdf2_sha256$0$salt${VECTOR}",
        f"pbkdf2_sha256$1$${VECTOR}",
        f"pbkdf2_sha256$1$sälz${VECTOR}",
        "pbkdf2_sha256$1$salt$not base64!",
        "pbkdf2_sha256$1$salt$AAAA",
        f"pbkdf2_sha256$1$salt${VECTOR}$extra",
    ],
)
def test_malformed_hashes_are_refused_and_match_nothing(encoded):
    """A value hash_password could not have made fails check_password_hash and verifies no password."""
    with pytest.raises(ValueError, match="hl7engine hash-password"):
        check_password_hash(encoded)
    assert not verify_password("password", encoded)


def test_the_decoy_costs_the_most_and_matches_nothing():
    """decoy_hash is well-formed, costs as much as the costliest hash given, and no password matches it."""
    hashes = [hash_password("a", iterations=3, salt="x"), hash_password("b", iterations=7, salt="y")]
    decoy = decoy_hash(hashes)
    assert check_password_hash(decoy) == decoy
    assert decoy.split("$")[1] == "7"
    assert decoy_hash([]).split("$")[1] == str(DEFAULT_ITERATIONS)
    assert not any(verify_password(password, decoy) for password in ("", "a", "b", "decoy"))


def test_redact_hashes_leaves_no_salt_or_digest_in_yaml_or_json():
    """Every hash in a YAML or JSON text becomes pbkdf2_sha256$<redacted>; the rest of the text stays."""
    encoded = hash_password("pw", iterations=10)
    text = f'users:\n  alice: "{encoded}"\n  bob: {encoded}  # comment\n{{"carol": "{encoded}"}}'
    redacted = redact_hashes(text)
    assert redacted == (
        'users:\n  alice: "pbkdf2_sha256$<redacted>"\n  bob: pbkdf2_sha256$<redacted>  # comment\n'
        '{"carol": "pbkdf2_sha256$<redacted>"}'
    )
    assert redact_hashes("no hash: pbkdf2_sha256 alone") == "no hash: pbkdf2_sha256 alone"
