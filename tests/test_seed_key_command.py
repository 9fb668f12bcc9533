import json
import os
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import override_settings

from enrolment import seeds, totp
from enrolment.models import AuditEvent, Device, SeedKey
from tests import servers
from tests.conftest import keyring_json


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


def stale_node(keyring_file, active: str) -> str:
    """The keyring of a node the new file has not reached: the same keys, another active."""
    stale = json.loads(keyring_file.read_text())
    stale["active"] = active
    return json.dumps(stale)


def test_a_node_still_on_a_dropped_key_refuses_to_seal_with_it(keyring_file, django_user_model):
    """The count before a drop saw no seed under old1; a node whose keyring the new file has not
    reached yet still sealed with it, and its seed was lost with the file. Now it refuses."""
    from enrolment import enrolling

    before = stale_node(keyring_file, "old1")
    seed_key("activate", "old2", "--file", str(keyring_file))
    seed_key("drop", "old1", "--file", str(keyring_file))
    user = django_user_model.objects.create_user("carol")

    with (
        override_settings(SEED_KEYRING=before, SEED_KEYRING_FILE=""),
        pytest.raises(seeds.KeyringError, match="'old1' of this node's keyring was dropped"),
    ):
        enrolling.start_enrolment(user)
    assert not Device.objects.filter(user=user).exists()
    with pytest.raises(CommandError, match="was dropped"):
        seed_key("activate", "old1", "--file", str(keyring_file))


def test_a_key_made_anew_under_a_known_id_seals_nothing_and_is_not_ready(
    keyring_file, make_device, users, client
):
    """seed_key new --id 2027 run on each node instead of the file copied: two keys of one id."""
    make_device(users[0])  # sealed under old1, which the database now knows
    other_bytes = keyring_json("old1")
    with override_settings(SEED_KEYRING=other_bytes, SEED_KEYRING_FILE=""):
        with pytest.raises(seeds.KeyringError, match="not the key of that id"):
            make_device(users[1])
        ready = client.get("/internal/health/ready")
    assert ready.status_code == 503
    assert "keyring_keys_differ" in ready.json()["failing"]
    assert client.get("/internal/health/ready").status_code == 200
    with pytest.raises(CommandError, match="was used before"):
        seed_key("new", "--file", str(tmp_copy(keyring_file)), "--id", "old1")


def tmp_copy(keyring_file):
    copy = keyring_file.with_name("elsewhere.json")
    copy.write_text(json.dumps({"active": "x", "keys": {"x": "A" * 43 + "="}}))
    return copy


@pytest.mark.skipif(connection.vendor != "postgresql", reason="two writers at once")
@pytest.mark.django_db(transaction=True)
def test_a_drop_waits_for_a_seal_in_flight_and_counts_it(tmp_path, django_user_model):
    """Another node seals under the key while the drop runs: the drop waits for its commit,
    counts its row and refuses, instead of counting before it and losing that seed."""
    path = tmp_path / "keyring.json"
    seed_key("new", "--file", str(path), "--id", "old1")
    seed_key("new", "--file", str(path), "--id", "new1")
    stale = seeds.Keyring.parse(path.read_text(), "the other node's")  # old1 active
    earlier = Device(user=django_user_model.objects.create_user("eve"), name="FreeOTP")
    with transaction.atomic():
        earlier.set_seed(seeds.new_seed(), stale)  # old1 known to the database since
        earlier.save()
    earlier.delete()
    user = django_user_model.objects.create_user("dora")
    sealed, commit = threading.Event(), threading.Event()

    def other_node_enrols():
        with transaction.atomic():
            device = Device(user=user, name="FreeOTP", confirmed=False)
            device.set_seed(seeds.new_seed(), stale)
            device.save()
            sealed.set()
            commit.wait(timeout=10)
        connection.close()

    enrolling = threading.Thread(target=other_node_enrols)
    enrolling.start()
    assert sealed.wait(timeout=10)
    seed_key("activate", "new1", "--file", str(path))
    threading.Timer(1, commit.set).start()  # the drop below must wait for this commit
    with pytest.raises(CommandError, match="1 seed\\(s\\) still need it"):
        seed_key("drop", "old1", "--file", str(path))
    enrolling.join(timeout=10)
    assert "old1" in seeds.Keyring.parse(path.read_text(), "test").keys


def test_after_the_upgrade_the_first_node_to_ask_cannot_make_its_wrong_key_the_reference(
    keyring_file, make_device, users, client
):
    """Seeds sealed before the SeedKey table existed: a node with other bytes under their id
    is checked against them, not taken at its word for being first."""
    make_device(users[0])  # under old1, the right bytes
    SeedKey.objects.all().delete()  # as right after migration 0008
    wrong_bytes = keyring_json("old1")
    with override_settings(SEED_KEYRING=wrong_bytes, SEED_KEYRING_FILE=""):
        with pytest.raises(seeds.KeyringError, match="not the key of that id"):
            make_device(users[1])
        assert "keyring_keys_differ" in client.get("/internal/health/ready").json()["failing"]
    assert not SeedKey.objects.exists()
    assert client.get("/internal/health/ready").json() == {"ready": True}  # the right node
    make_device(users[2])  # and it seals
    assert list(SeedKey.objects.values_list("key_id", flat=True)) == ["old1"]


def test_a_node_whose_active_key_was_dropped_is_not_ready(keyring_file, client):
    before = stale_node(keyring_file, "old1")
    seed_key("activate", "old2", "--file", str(keyring_file))
    seed_key("drop", "old1", "--file", str(keyring_file))
    with override_settings(SEED_KEYRING=before, SEED_KEYRING_FILE=""):
        ready = client.get("/internal/health/ready")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["keyring_active_key_dropped"]
