import pytest

from enrolment import totp

# RFC 6238 Appendix B. The seeds are the ASCII digits repeated to the hash's block of key:
# 20 bytes for SHA-1, 32 for SHA-256, 64 for SHA-512.
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize(("unix_time", "sha1", "sha256", "sha512"), VECTORS)
def test_rfc6238_appendix_b(unix_time, sha1, sha256, sha512):
    for algorithm, expected in [("sha1", sha1), ("sha256", sha256), ("sha512", sha512)]:
        assert totp.totp(SEEDS[algorithm], unix_time, digits=8, algorithm=algorithm) == expected


def test_rfc4226_appendix_d_first_counters():
    expected = ["755224", "287082", "359152", "969429", "338314"]
    assert [totp.hotp(SEEDS["sha1"], c) for c in range(5)] == expected


def test_find_step_returns_the_matching_step_within_the_window():
    key = SEEDS["sha1"]
    code = totp.hotp(key, 41)
    assert totp.find_step(key, code, range(40, 43)) == 41
    assert totp.find_step(key, code, range(42, 45)) is None


def fullwidth(code: str) -> str:
    return "".join(chr(0xFF10 + int(digit)) for digit in code)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: "",
        lambda c: c[:5],
        lambda c: c + "0",
        lambda c: c[:5] + "a",
        fullwidth,
        lambda c: " " + c[1:],
        lambda c: c + "\n",
    ],
)
def test_find_step_refuses_anything_but_the_right_number_of_ascii_digits(mangle):
    right = totp.hotp(SEEDS["sha1"], 7)
    assert totp.find_step(SEEDS["sha1"], right, range(0, 10)) == 7
    assert totp.find_step(SEEDS["sha1"], mangle(right), range(0, 10)) is None


def test_base32_secret_is_unpadded_upper_case():
    assert totp.base32_secret(b"\x00" * 20) == "A" * 32
    assert totp.base32_secret(b"\xff" * 16) == "7" * 25 + "4"
