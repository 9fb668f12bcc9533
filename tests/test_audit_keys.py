"""The audit trail's MAC key rotates: rows and seals name their key, and with a new active key
the old history still verifies. Once the old key is retired, anything MACed with it after the
retirement is reported, whether a thief forged it or a node still has the old key; a key
missing from the settings is reported too, and a malformed keyring stops the site."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from enrolment import audit, checks
from enrolment.models import AuditEvent, AuditSeal
from tests.test_audit_chain import events, verify_audit

pytestmark = pytest.mark.django_db

NEW_SECRET = "audit-key-2027-Zr8oQm3VtLx9pWc2aHs5NdEe"


def keyring(active: str, **keys: str) -> str:
    return json.dumps({"active": active, "keys": keys})


@pytest.fixture
def rotated(settings):
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


def test_a_retired_key_can_no_longer_add_to_the_trail(rotated, settings):
    printed = audit_key("retire", "legacy")
    retirement = AuditEvent.objects.get(action="audit.retire_mac_key")
    assert f"'legacy' retired by row {retirement.id}, sealed in seal 2" in printed
    assert verify_audit()[0] == 0  # what the old key made before stays valid
    status = audit_key("status")
    assert "active key: 2027" in status and f"legacy\t5\t1\tby row {retirement.id}" in status

    # A thief with the old key and write access to the database adds a row MACed with it...
    forged = audit.event(actor_kind="staff", actor="alice", action="helpdesk.reset-device")
    forged.mac_key = "legacy"
    forged.mac = audit.row_mac(forged)
    audit.insert(forged)
    # ...and a node that still has the old settings writes and seals with it.
    settings.AUDIT_MAC_KEYRING = ""
    [lagging] = events(1)
    call_command("seal_audit", stdout=StringIO())
    settings.AUDIT_MAC_KEYRING = keyring("2027", **{"2027": NEW_SECRET})  # where it is verified
    status, report = verify_audit()
    assert status == 1
    for row in (forged, lagging):
        assert (
            f"retired_key\trow {row.id} was MACed with key 'legacy' after its retirement" in report
        )
    assert "retired_key\tseal 3 was MACed with key 'legacy' after its retirement" in report


def test_retire_refuses_the_active_key_and_a_key_still_in_use(rotated, settings):
    with pytest.raises(CommandError, match="'2027' is the active key"):
        audit_key("retire", "2027")
    with pytest.raises(CommandError, match="no key 'nope' is configured"):
        audit_key("retire", "nope")
    settings.AUDIT_MAC_KEYRING = ""
    events(1)  # just now, with the old key: some node has not the new keyring yet
    settings.AUDIT_MAC_KEYRING = keyring("2027", **{"2027": NEW_SECRET})
    with pytest.raises(CommandError, match="a node still uses it"):
        audit_key("retire", "legacy")
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
        (keyring("b", a=NEW_SECRET), "'b' is not among its keys"),
        (keyring("legacy", legacy=NEW_SECRET), "is not a key id"),
    ],
)
def test_a_malformed_keyring_stops_the_site(settings, text, complaint):
    settings.AUDIT_MAC_KEYRING = text
    [error] = checks.check_audit_keys()
    assert error.id == "enrolment.E006" and complaint in error.msg
    assert NEW_SECRET not in error.msg
    with pytest.raises(Exception, match="Audit MAC keys unusable"):
        checks.refuse_to_start_without_keyring()


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
