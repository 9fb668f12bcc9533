import json
import os
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from enrolment import seeds, totp
from enrolment.models import AuditEvent, Device
from tests import servers


def seed_key(*args) -> str:
    out = StringIO()
    call_command("seed_key", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def keyring_file(db, tmp_path):
    """A keyring file with keys old1 (active) and old2, and the site reading it."""
    path = tmp_path / "keyring.json"
    seed_key("new", "--file", str(path), "--id", "old1")
    seed_key("new", "--file", str(path), "--id", "old2")
    with override_settings(SEED_KEYRING="", SEED_KEYRING_FILE=str(path)):
        yield path


@pytest.fixture
def users(django_user_model):
    return [django_user_model.objects.create_user(f"user{i}") for i in range(6)]


def test_new_makes_a_private_keyring_file(db, tmp_path):
    path = tmp_path / "keys" / "keyring.json"
    assert "active" in seed_key("new", "--file", str(path), "--id", "k1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert seeds.Keyring.parse(path.read_text(), "test").active_id == "k1"


def test_a_rewritten_keyring_keeps_its_owner_group_and_mode(keyring_file):
    """root:mss-totp 0640, as the README sets it: a new key must not make it root's only."""
    os.chmod(keyring_file, 0o640)
    if os.geteuid() == 0:
        os.chown(keyring_file, 0, 12345)
    seed_key("new", "--file", str(keyring_file), "--id", "third")
    stat = keyring_file.stat()
    assert oct(stat.st_mode & 0o777) == "0o640"
    if os.geteuid() == 0:
        assert (stat.st_uid, stat.st_gid) == (0, 12345)


def test_rows_under_two_old_keys_end_up_under_the_new_key(keyring_file, users, make_device):
    plain = [seeds.new_seed() for _ in users]
    for user, seed in zip(users[:3], plain[:3], strict=True):
        make_device(user, seed)
    seed_key("activate", "old2", "--file", str(keyring_file))
    for user, seed in zip(users[3:], plain[3:], strict=True):
        make_device(user, seed)
    seed_key("new", "--file", str(keyring_file), "--id", "new", "--activate")

    out = seed_key("rotate", "--batch-size", "2")

    assert "Rotated 6 seed(s) to key new" in out
    assert set(Device.objects.values_list("key_id", flat=True)) == {"new"}
    for user, seed in zip(users, plain, strict=True):
        device = Device.objects.get(user=user)
        assert device.seed() == seed
        assert device.verify_token(totp.totp(seed, time.time()))
    seed_key("drop", "old1", "--file", str(keyring_file))
    seed_key("drop", "old2", "--file", str(keyring_file))
    assert set(json.loads(keyring_file.read_text())["keys"]) == {"new"}
    # Every change of the keyring is in the audit trail, by the key's id, never the key.
    trail = AuditEvent.objects.filter(action__startswith="seed_key.").order_by("id")
    assert list(trail.values_list("action", "target")) == [
        ("seed_key.new", "old1"),
        ("seed_key.new", "old2"),
        ("seed_key.activate", "old2"),
        ("seed_key.new", "new"),
        ("seed_key.rotate", "new"),
        ("seed_key.drop", "old1"),
        ("seed_key.drop", "old2"),
    ]
    assert trail.get(action="seed_key.rotate").details == {"rotated": 6, "unreadable": 0}
    keys = json.loads(keyring_file.read_text())["keys"].values()
    assert not any(key in str(list(trail.values())) for key in keys)


def test_an_interrupted_rotation_resumed_finishes(keyring_file, users, make_device, monkeypatch):
    plain = {user.pk: seeds.new_seed() for user in users}
    for user in users:
        make_device(user, plain[user.pk])
    seed_key("new", "--file", str(keyring_file), "--id", "new", "--activate")

    real_seal, calls = seeds.Keyring.seal, []

    def seal_then_crash(self, seed, associated_data):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, in the middle of the second batch
        return real_seal(self, seed, associated_data)

    monkeypatch.setattr(seeds.Keyring, "seal", seal_then_crash)
    with pytest.raises(KeyboardInterrupt):
        seed_key("rotate", "--batch-size", "2")
    monkeypatch.setattr(seeds.Keyring, "seal", real_seal)

    # The first batch committed; the second rolled back whole; every seed still opens.
    assert Device.objects.filter(key_id="new").count() == 2
    assert all(d.seed() == plain[d.user_id] for d in Device.objects.all())

    assert "Rotated 4 seed(s)" in seed_key("rotate", "--batch-size", "2")
    assert set(Device.objects.values_list("key_id", flat=True)) == {"new"}
    assert all(d.seed() == plain[d.user_id] for d in Device.objects.all())


def test_dropping_a_key_still_in_use_is_refused(keyring_file, users, make_device):
    for user in users[:3]:
        make_device(user)
    seed_key("new", "--file", str(keyring_file), "--id", "new", "--activate")

    with pytest.raises(CommandError, match="3 seed\\(s\\) still need it"):
        seed_key("drop", "old1", "--file", str(keyring_file))
    assert "old1" in json.loads(keyring_file.read_text())["keys"]


def test_the_active_key_cannot_be_dropped(keyring_file):
    with pytest.raises(CommandError, match="is the active key"):
        seed_key("drop", "old1", "--file", str(keyring_file))


def test_status_counts_seeds_per_key(keyring_file, users, make_device):
    for user in users[:2]:
        make_device(user)
    out = seed_key("status")
    assert "old1: 2 seed(s) (active)" in out
    assert "old2: 0 seed(s)" in out


@pytest.mark.parametrize(
    "damage", [{"ciphertext": b"\x00" * 36}, {"nonce": b"\x00" * 4}], ids=["ciphertext", "nonce"]
)
def test_rotation_leaves_an_unreadable_row_alone_and_says_so(
    keyring_file, users, make_device, damage
):
    bad, good = make_device(users[0]), make_device(users[1])  # the bad row first
    Device.objects.filter(pk=bad.pk).update(**damage)
    seed_key("new", "--file", str(keyring_file), "--id", "new", "--activate")

    with pytest.raises(CommandError, match="1 seed\\(s\\) could not be opened"):
        seed_key("rotate")
    assert Device.objects.get(pk=good.pk).key_id == "new"
    assert Device.objects.get(pk=bad.pk).key_id == "old1"
    rotation = AuditEvent.objects.get(action="seed_key.rotate")
    assert (rotation.outcome, rotation.details["unreadable"]) == ("partial", 1)


@pytest.mark.parametrize("key_id", ["2027 Q1", "a/b", "k" * 33, "k1\n"])
def test_a_key_id_the_site_would_refuse_is_never_written(keyring_file, key_id):
    before = keyring_file.read_text()
    with pytest.raises(CommandError, match="must be 1-32 letters"):
        seed_key("new", "--file", str(keyring_file), "--id", key_id)
    assert keyring_file.read_text() == before
    assert seeds.load_keyring().active_id == "old1"  # the site still reads it


def test_an_edit_of_a_file_the_site_does_not_read_says_so(db, tmp_path):
    err = StringIO()
    path = tmp_path / "other.json"
    call_command(
        "seed_key", "new", "--file", str(path), "--activate", stdout=StringIO(), stderr=err
    )
    assert (
        f"this node reads the keyring of SEED_KEYRING (its settings), not {path}" in err.getvalue()
    )

    out = seed_key("rotate")
    assert "Using the keyring of SEED_KEYRING (its settings)." in out


def test_edits_of_one_file_take_turns(tmp_path):
    """Each edit reads and writes the file under a lock: without it, two commands at once each
    wrote back what they had read, and one's new key was lost. Eight real processes, on a
    database not made yet (the first key is made before it), hence no audit row to write."""
    path = tmp_path / "keyring.json"
    env = servers.site_environment(f"sqlite:///{tmp_path / 'none.sqlite3'}", "", DEBUG="1")
    env["SEED_KEYRING_FILE"] = str(path)
    servers.manage(env, "seed_key", "new", "--id", "k0")
    commands = [
        subprocess.Popen(
            [sys.executable, "manage.py", "seed_key", "new", "--id", f"k{i}"],
            cwd=servers.ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for i in range(1, 9)
    ]
    assert [command.wait(timeout=120) for command in commands] == [0] * 8
    keys = seeds.Keyring.parse(path.read_text(), "test").keys
    assert sorted(keys) == [f"k{i}" for i in range(9)]
