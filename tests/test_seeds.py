import base64
import time

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings

from enrolment import seeds, totp
from enrolment.models import Device
from tests.conftest import keyring_json


def every_stored_byte() -> bytes:
    """Every value of every column of every table, as the database hands it over."""
    blob = bytearray()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, memoryview)):
                        blob += bytes(value)
                    elif value is not None:
                        blob += str(value).encode()
                    blob += b"\x00"
    return bytes(blob)


def seed_forms(seed: bytes) -> list[bytes]:
    b32 = base64.b32encode(seed).decode()
    forms = [
        seed.hex(),
        seed.hex().upper(),
        b32,
        b32.rstrip("="),
        b32.lower(),
        base64.b64encode(seed).decode(),
        base64.urlsafe_b64encode(seed).decode(),
    ]
    return [seed] + [form.encode() for form in forms]


def test_no_form_of_the_seed_is_anywhere_in_the_database(user, make_device):
    seed = seeds.new_seed()
    device = make_device(user, seed)

    stored = every_stored_byte()

    assert bytes(device.ciphertext) in stored  # the scan does see the device's row
    for form in seed_forms(seed):
        assert form not in stored


def test_a_stored_seed_decrypts_back_and_accepts_its_code(user, make_device):
    seed = seeds.new_seed()
    device = Device.objects.get(pk=make_device(user, seed).pk)

    assert device.seed() == seed
    assert device.verify_token(totp.totp(seed, time.time()))


def test_every_encryption_uses_a_fresh_nonce(user, make_device):
    seed = seeds.new_seed()
    first, second = make_device(user, seed, confirmed=False), make_device(user, seed, False)
    assert bytes(first.nonce) != bytes(second.nonce)
    assert bytes(first.ciphertext) != bytes(second.ciphertext)


def test_a_ciphertext_copied_to_another_device_does_not_decrypt(user, make_device):
    seed_a = seeds.new_seed()
    device_a = make_device(user, seed_a, confirmed=False)
    device_b = make_device(user, seeds.new_seed())
    Device.objects.filter(pk=device_b.pk).update(
        key_id=device_a.key_id, nonce=device_a.nonce, ciphertext=device_a.ciphertext
    )
    device_b.refresh_from_db()

    with pytest.raises(seeds.SeedDecryptionError, match="altered or copied from another row"):
        device_b.seed()
    # No code is accepted, and none is a wrong one either: the caller cannot answer.
    with pytest.raises(seeds.SeedDecryptionError):
        device_b.verify_token(totp.totp(seed_a, time.time()))


def test_a_seed_handed_to_another_user_does_not_decrypt(user, make_device, django_user_model):
    seed = seeds.new_seed()
    device = make_device(user, seed)
    other = django_user_model.objects.create_user("mallory")
    Device.objects.filter(pk=device.pk).update(user=other)
    device.refresh_from_db()

    with pytest.raises(seeds.SeedDecryptionError):
        device.verify_token(totp.totp(seed, time.time()))


def test_a_code_is_accepted_once(user, make_device):
    seed = seeds.new_seed()
    device = make_device(user, seed)
    code = totp.totp(seed, time.time())

    assert device.verify_token(code)
    assert not device.verify_token(code)
    assert not Device.objects.get(pk=device.pk).verify_token(code)


def test_a_device_under_a_key_the_keyring_lacks_is_unusable(user, make_device):
    seed = seeds.new_seed()
    device = make_device(user, seed)
    with (
        override_settings(SEED_KEYRING=keyring_json("other")),
        pytest.raises(seeds.SeedDecryptionError, match="no key 'test1'"),
    ):
        device.verify_token(totp.totp(seed, time.time()))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "set SEED_KEYRING or SEED_KEYRING_FILE"),
        ("not json", "SEED_KEYRING is not valid JSON"),
        ('{"active": "a", "keys": {"a": "c2hvcnQ="}}', "key 'a' is 5 bytes; AES-256 needs 32"),
        ('{"active": "a", "keys": {"a": "%%%"}}', "key 'a' is not valid base64"),
        ('{"active": "b", "keys": {}}', "the active key 'b' is not among its keys"),
        ('["a"]', "SEED_KEYRING must be"),
        ('{"active": ["a"], "keys": {}}', "the active key ['a'] is not among its keys"),
        ('{"active": "a", "keys": {"a\\n": "x"}}', "key id 'a\\n' must be 1-32 letters"),
        (  # a hand-merged file: json.loads would keep the second key and lose the first
            '{"active": "a", "keys": {"a": "KEY_A", "a": "KEY_B"}}'.replace(
                "KEY_A", "A" * 43 + "="
            ).replace("KEY_B", "B" * 43 + "="),
            "SEED_KEYRING names 'a' twice",
        ),
    ],
)
def test_the_system_check_refuses_a_missing_or_bad_keyring(value, message):
    with override_settings(SEED_KEYRING=value, SEED_KEYRING_FILE=""):
        errors = checks.run_checks(tags=["seeds"])
    assert [e.id for e in errors] == ["enrolment.E001"]
    assert message in errors[0].msg


def test_the_keyring_can_come_from_a_file(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_text(keyring_json("k1"))
    with override_settings(SEED_KEYRING="", SEED_KEYRING_FILE=str(path)):
        assert seeds.load_keyring().active_id == "k1"
    with override_settings(SEED_KEYRING="", SEED_KEYRING_FILE=str(tmp_path / "absent.json")):
        errors = checks.run_checks(tags=["seeds"])
    assert "SEED_KEYRING_FILE: cannot read" in errors[0].msg


def test_a_keyring_file_not_in_utf8_is_named_as_such(tmp_path):
    path = tmp_path / "keyring.json"
    path.write_bytes(keyring_json("k1").encode("utf-16"))
    with override_settings(SEED_KEYRING="", SEED_KEYRING_FILE=str(path)):
        errors = checks.run_checks(tags=["seeds"])
    assert [e.id for e in errors] == ["enrolment.E001"]
    assert "is not UTF-8 text" in errors[0].msg


def test_a_malformed_nonce_is_a_seed_that_does_not_open(user, make_device):
    """Not cryptography's ValueError: the rotation and the verifier treat it as any other
    seed that does not open."""
    device = make_device(user)
    device.nonce = b"\0" * 4
    with pytest.raises(seeds.SeedDecryptionError, match="nonce is 4 bytes"):
        device.seed()


def test_a_template_never_renders_the_seed(user, make_device):
    from django.template import Context, Template

    device = make_device(user)
    rendered = Template("[{{ device.seed }}]").render(Context({"device": device}))
    assert rendered == "[]"


@pytest.mark.django_db(transaction=True)
def test_a_seed_is_sealed_only_inside_the_transaction_that_saves_it(django_user_model):
    """Outside one, the lock that a key's drop waits for would end with its own statement."""
    device = Device(user=django_user_model.objects.create_user("x"), name="FreeOTP")
    with pytest.raises(RuntimeError, match="inside the transaction that saves it"):
        device.set_seed(seeds.new_seed())
