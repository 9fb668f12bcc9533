"""The audit trail's MAC key rotates: rows and seals name their key, and with a new active key
the old history still verifies. Once the old key is retired, anything MACed with it after the
retirement is reported, whether a thief forged it or a node still has the old key; a key
missing from the settings is reported too, and a malformed keyring stops the site."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from enrolment import audit, checks
from enrolment.management.commands import audit_key as audit_key_command
from enrolment.models import AuditEvent, AuditSeal
from tests.test_audit_chain import events, verify_audit

pytestmark = pytest.mark.django_db

NEW_SECRET = "audit-key-2027-Zr8oQm3VtLx9pWc2aHs5NdEe"


def keyring(active: str, **keys: str) -> str:
    return json.dumps({"active": active, "keys": keys})


@pytest.fixture
def no_wait(monkeypatch):
    """audit_key retire, without waiting 5 minutes after the old key's last seal."""
    monkeypatch.setattr(audit_key_command, "STILL_IN_USE", timedelta(0))


@pytest.fixture
def rotated(settings, no_wait):
    """An hour of rows under the first key (AUDIT_MAC_KEY), sealed; then every node given a
    keyring whose active key is a new one, and a few rows under it."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    old = events(5, at=timezone.now() - timedelta(hours=1))
    call_command("seal_audit", stdout=StringIO())
    settings.AUDIT_MAC_KEYRING = keyring("2027", **{"2027": NEW_SECRET})
    return old, events(3)


def audit_key(*arguments) -> str:
    out = StringIO()
    call_command("audit_key", *arguments, stdout=out)
    return out.getvalue()


def test_the_trail_verifies_across_a_rotation(rotated):
    old, new = rotated
    assert {row.mac_key for row in old} == {"legacy"} and {row.mac_key for row in new} == {"2027"}
    call_command("seal_audit", stdout=StringIO())
    assert list(AuditSeal.objects.values_list("mac_key", flat=True)) == ["legacy", "2027"]
    status, report = verify_audit()
    assert status == 0, report


def retire(settings, key_id: str, *options: str) -> str:
    """``audit_key retire``, then its "retired" entry put in the keyring, as on every node."""
    printed = audit_key("retire", key_id, *options)
    entry = json.loads(re.search(r'"retired": (\{.*\})', printed)[1])
    nodes_keyring = json.loads(settings.AUDIT_MAC_KEYRING)
    settings.AUDIT_MAC_KEYRING = json.dumps({**nodes_keyring, "retired": entry})
    return printed


def forged_row(key_id: str) -> AuditEvent:
    """What a thief of the key, with write access to the database, can add."""
    row = audit.event(actor_kind="staff", actor="alice", action="helpdesk.reset-device")
    row.mac_key = key_id
    row.mac = audit.row_mac(row)
    return audit.insert(row)


def test_a_retired_key_can_no_longer_add_to_the_trail(rotated, settings):
    printed = retire(settings, "legacy")
    assert "'legacy' verified up to seal 2" in printed
    retirement = AuditEvent.objects.get(action="audit.retire_mac_key", outcome="ok")
    assert (retirement.target, retirement.mac_key) == ("legacy", "2027")
    assert retirement.details["seal"] == json.loads(settings.AUDIT_MAC_KEYRING)["retired"]["legacy"]
    assert verify_audit()[0] == 0  # what the old key made before stays valid
    status = audit_key("status")
    assert "active key: 2027" in status and "legacy\t5\t1\tup to seal 2" in status

    forged = forged_row("legacy")
    # A node that still has the old settings writes with the old key; it cannot seal onto
    # the new key's seals, which it cannot verify: the thief seals them with the old key.
    nodes_keyring = settings.AUDIT_MAC_KEYRING
    settings.AUDIT_MAC_KEYRING = ""
    [lagging] = events(1)
    with pytest.raises(CommandError, match=r"the newest seal \(2\) does not verify"):
        call_command("seal_audit", stdout=StringIO())
    settings.AUDIT_MAC_KEYRING = nodes_keyring
    forged_seal("legacy")
    status, report = verify_audit()
    assert status == 1
    for row in (forged, lagging):
        assert (
            f"retired_key\trow {row.id} was MACed with key 'legacy' after its retirement" in report
        )
    assert "retired_key\tseal 3 was MACed with key 'legacy' after its retirement" in report


def forged_seal(key_id: str) -> AuditSeal:
    """A seal of the rows not sealed yet, MACed with ``key_id``, made as the sealer makes one
    (its algorithm is no secret)."""
    from enrolment.audit_chain import _canonical_seal, _digest

    previous = AuditSeal.objects.order_by("-seq").first()
    rows = AuditEvent.objects.filter(id__gt=previous.last_id).order_by("id")
    ids_and_macs = list(rows.values_list("id", "mac"))
    seal = AuditSeal(
        seq=previous.seq + 1,
        first_id=previous.last_id + 1,
        last_id=ids_and_macs[-1][0],
        count=len(ids_and_macs),
        gaps=[],
        digest=_digest(ids_and_macs),
        last_at=rows.last().at,
        previous_mac=previous.mac,
        mac_key=key_id,
    )
    seal.mac = audit.seal_mac(_canonical_seal(seal), key_id)
    seal.save()
    return seal


def test_a_retired_key_cannot_mark_a_range_purged(rotated, settings):
    """A purge mark lets a range's rows go: one made with the old key would let its thief
    delete any range unseen."""
    call_command("seal_audit", stdout=StringIO())
    retire(settings, "legacy")
    newest = AuditSeal.objects.order_by("-seq").first()
    newest.purged_at = timezone.now()
    newest.purge_mac_key = "legacy"
    newest.purge_mac = audit.seal_mac(
        f"purged:{newest.seq}:{newest.mac}:{newest.purged_at.isoformat()}", "legacy"
    )
    newest.save()
    AuditEvent.objects.filter(id__gte=newest.first_id)._raw_delete("default")
    status, report = verify_audit()
    assert status == 1
    assert f"retired_key\tseal {newest.seq}'s purge mark was MACed with key 'legacy'" in report


def test_purge_marks_made_before_the_retirement_stay_valid(settings, no_wait):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    purged = events(4, at=timezone.now() - timedelta(days=400))
    call_command("purge_audit", stdout=StringIO())  # with the legacy key
    assert AuditSeal.objects.get().purge_mac_key in ("", "legacy")
    settings.AUDIT_MAC_KEYRING = keyring("2027", **{"2027": NEW_SECRET})
    events(2)
    printed = retire(settings, "legacy")
    rows = f"rows {purged[0].id}-{purged[-1].id}"
    assert f"purge mark of seal 1 ({rows}, purged " in printed and "with '2027'" in printed
    assert AuditSeal.objects.get(seq=1).purge_mac_key == "2027"
    status, report = verify_audit()
    assert status == 0, report


def test_the_seal_a_retirement_names_must_stay_in_the_chain(rotated, settings):
    call_command("seal_audit", stdout=StringIO())
    retire(settings, "legacy")
    # The thief deletes the newest seals, to seal again with the old key from there.
    AuditSeal.objects.filter(seq__gte=2).delete()
    status, report = verify_audit()
    assert status == 1
    assert "seal_missing\tseal 2, where key 'legacy' was retired, is not in the chain" in report


def test_a_row_relabelled_with_another_keys_id_does_not_verify(rotated):
    _old, new = rotated
    AuditEvent.objects.filter(id=new[0].id).update(mac_key="2028")
    with override_settings(
        AUDIT_MAC_KEYRING=keyring("2027", **{"2027": NEW_SECRET, "2028": NEW_SECRET[::-1]})
    ):
        status, report = verify_audit()
    assert status == 1 and f"altered\trow {new[0].id} was altered or forged" in report


def test_retire_refuses_the_active_key_a_key_in_use_and_a_forged_trail(
    rotated, settings, monkeypatch
):
    with pytest.raises(CommandError, match="'2027' is the active key"):
        audit_key("retire", "2027")
    with pytest.raises(CommandError, match="no key 'nope' is configured"):
        audit_key("retire", "nope")
    nodes_keyring = settings.AUDIT_MAC_KEYRING
    settings.AUDIT_MAC_KEYRING = ""
    events(1)  # just now, with the old key: some node has not the new keyring yet
    settings.AUDIT_MAC_KEYRING = nodes_keyring
    monkeypatch.setattr(audit_key_command, "STILL_IN_USE", timedelta(minutes=5))
    with pytest.raises(CommandError, match="a node, sealer or purger still uses it"):
        audit_key("retire", "legacy")
    monkeypatch.setattr(audit_key_command, "STILL_IN_USE", timedelta(0))
    AuditEvent.objects.filter(mac_key="legacy").update(at=timezone.now() - timedelta(hours=1))
    with pytest.raises(CommandError, match="the trail does not verify"):
        audit_key("retire", "legacy")  # the row just edited (its time) no longer verifies
    assert not AuditEvent.objects.filter(action="audit.retire_mac_key").exists()


def test_a_key_missing_from_the_settings_is_reported(rotated, settings):
    _old, new = rotated
    call_command("seal_audit", stdout=StringIO())
    settings.AUDIT_MAC_KEYRING = keyring("2028", **{"2028": NEW_SECRET[::-1]})  # 2027 dropped
    status, report = verify_audit()
    assert status == 1
    assert f"unknown_key\trow {new[0].id}: its MAC key '2027' is not configured" in report
    assert "unknown_key\tseal 2: its MAC key '2027' is not configured" in report
    assert "NOT CONFIGURED" in audit_key("status")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ('{"active": "a", "keys": {"a": "short"}}', "32 characters or more"),
        (keyring("b", a=NEW_SECRET), "its active key is not among its keys"),
        (keyring(NEW_SECRET, a=NEW_SECRET[::-1]), "its active key is not among its keys"),
        (keyring("legacy", legacy=NEW_SECRET), "a key id is not"),
        (keyring("a", **{"-a": NEW_SECRET, "a": NEW_SECRET[::-1]}), "a key id is not"),
        (keyring("a\n", **{"a\n": NEW_SECRET}), "a key id is not"),
        (keyring("a", a=NEW_SECRET, b=NEW_SECRET), "two keys share one secret"),
        (
            json.dumps(
                {"active": "a", "keys": {"a": NEW_SECRET}, "retired": {"b": "1:" + "0" * 64}}
            ),
            "a retired key must stay among its keys",
        ),
        (
            json.dumps({"active": "a", "keys": {"a": NEW_SECRET}, "retired": {"legacy": "1"}}),
            '"SEQ:MAC"',
        ),
    ],
)
def test_a_malformed_keyring_stops_the_site(settings, text, complaint):
    settings.AUDIT_MAC_KEYRING = text
    [error] = checks.check_audit_keys()
    assert error.id == "enrolment.E006" and complaint in error.msg
    assert NEW_SECRET not in error.msg and NEW_SECRET[::-1] not in error.msg
    with pytest.raises(Exception, match="Audit MAC keys unusable"):
        checks.refuse_to_start_misconfigured()


def test_the_verifiers_own_sql_writes_the_active_key(claire, settings):
    from enrolment import verifier

    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    settings.AUDIT_MAC_KEYRING = keyring("2027", **{"2027": NEW_SECRET})
    assert verifier.verify(claire.mailbox, claire.secret(), "2001:db8::7", "imap").ok
    login = AuditEvent.objects.get(action="mail.login")
    assert login.mac_key == "2027"
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0


def test_a_row_from_a_node_of_the_previous_version_verifies(settings):
    """During an upgrade's rolling restart, old nodes insert rows without the mac_key column:
    the database's default names their key (AUDIT_MAC_KEY's), and they verify."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    row = audit.event(actor_kind="system", actor="old node", action="mail.login")
    columns = ["at", "actor_kind", "actor", "action", "target", "outcome", "details", "uid", "mac"]
    values = [getattr(row, column) for column in columns]
    values[columns.index("details")] = json.dumps(row.details)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO enrolment_auditevent ({', '.join(columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})",
            values,
        )
    assert AuditEvent.objects.get().mac_key == "legacy"
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0


def test_a_named_keys_id_is_part_of_its_mac_key():
    """Two ids with one secret (the keyring refuses it, a copy-paste makes it) still MAC apart:
    a row relabelled from one to the other does not verify."""
    from enrolment.audit_keys import derived_key

    assert derived_key("row", "2027", NEW_SECRET) != derived_key("row", "2028", NEW_SECRET)
    assert derived_key("row", "2027", NEW_SECRET) != derived_key("seal", "2027", NEW_SECRET)
