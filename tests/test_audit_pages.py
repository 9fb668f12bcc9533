"""The auditors' pages: the trail filtered by period, professional or mailbox, and its export
as CSV and JSON (itself audited)."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from enrolment import audit
from enrolment.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail():
    def add(actor, target, action="mail.login", days_ago=0):
        row = audit.event(
            actor_kind="professional",
            actor=actor,
            action=action,
            target=target,
            outcome="ok",
            client_ip="192.0.2.1",
            details={"protocol": "imap", "reason": "new_login"},
        )
        row.at = timezone.now() - timedelta(days=days_ago)
        row.mac = audit.row_mac(row)
        return audit.insert(row)

    return [
        add("899700000001", "claire.martin@demo.mssante.fr"),
        add("899700000001", "claire.martin@demo.mssante.fr", days_ago=40),
        add("899700000002", "accueil@clinique-demo.mssante.fr"),
        add("alice", "899700000001", action="helpdesk.reset-device"),
    ]


def exported(client, fmt, **filters):
    response = client.get(f"/audit/export.{fmt}", filters)
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(body)))
    return json.loads(body)


def test_export_by_professional_in_csv_and_json(auditor_client, trail):
    for fmt in ("csv", "json"):
        rows = exported(auditor_client, fmt, professional="899700000001")
        assert sorted(int(row["id"]) for row in rows) == sorted(
            [trail[0].id, trail[1].id, trail[3].id]
        )  # as actor (logins) and as target (the helpdesk's action)
    [first] = [row for row in rows if row["id"] == trail[0].id]
    assert first["details"] == {"protocol": "imap", "reason": "new_login"}
    assert first["mac"] == trail[0].mac


def test_export_by_mailbox_and_period(auditor_client, trail):
    by_mailbox = exported(auditor_client, "json", mailbox="Accueil@Clinique-Demo.mssante.fr")
    assert [row["id"] for row in by_mailbox] == [trail[2].id]
    today = timezone.localdate()
    recent = exported(auditor_client, "csv", since=str(today - timedelta(days=7)), until=str(today))
    ids = {int(row["id"]) for row in recent}
    assert {trail[0].id, trail[2].id, trail[3].id} <= ids  # with the auditor's own login
    assert trail[1].id not in ids  # 40 days ago


def test_no_cell_of_the_csv_export_is_a_formula(auditor_client, trail):
    """Read as CSV, and as French Excel reads it: split on ";", quotes or not."""
    for typed in ['=HYPERLINK("http://x.example")', "x;=2+5;", "a,@SUM(1)", "-1+1"]:
        details = {"reason": f"ticket 12;{typed}"}  # a helpdesk reason holds what staff typed
        trail_row = audit.event(
            actor_kind="staff",
            actor="alice",
            action="helpdesk.end-sessions",
            target=typed,
            outcome="ok",
            details=details,
        )
        audit.insert(trail_row)
    response = auditor_client.get("/audit/export.csv")
    body = b"".join(response.streaming_content).decode()

    as_csv = [cell for row in csv.reader(io.StringIO(body)) for cell in row]
    split_on_semicolons = [cell.strip('"') for cell in body.replace("\n", ";").split(";")]
    for cells in (as_csv, split_on_semicolons):
        assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    assert "'=HYPERLINK" in body  # kept, as text


def test_each_export_is_audited(auditor_client, trail):
    exported(auditor_client, "csv", mailbox="claire.martin@demo.mssante.fr")
    event = AuditEvent.objects.get(action="audit.export")
    assert event.actor == "bruno"
    assert event.details == {"format": "csv", "mailbox": "claire.martin@demo.mssante.fr"}


def test_a_bad_filter_gets_a_clear_error_and_no_export(auditor_client, trail):
    response = auditor_client.get("/audit/export.csv", {"since": "1er décembre"})
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert not AuditEvent.objects.filter(action="audit.export").exists()
    assert auditor_client.get("/audit/export.xml").status_code == 404


def test_an_export_too_long_for_a_web_request_says_how_else(auditor_client, trail, settings):
    """Past AUDIT_EXPORT_MAX_ROWS the page refuses (a worker streaming past its timeout is
    killed mid-file) and names the command; the command exports it all, and is audited."""
    settings.AUDIT_EXPORT_MAX_ROWS = 2
    response = auditor_client.get("/audit/export.csv", {"professional": "899700000001"})
    assert response.status_code == 400
    assert "manage.py export_audit" in response.content.decode()
    assert not AuditEvent.objects.filter(action="audit.export").exists()

    out = io.StringIO()
    call_command("export_audit", "--professional", "899700000001", "--format", "json", stdout=out)
    assert sorted(row["id"] for row in json.loads(out.getvalue())) == sorted(
        [trail[0].id, trail[1].id, trail[3].id]
    )
    assert AuditEvent.objects.get(action="audit.export").actor == "manage.py export_audit"


def test_export_audit_refuses_a_bad_day_clearly():
    with pytest.raises(CommandError, match="--since: "):
        call_command("export_audit", "--since", "hier", stdout=io.StringIO())


def test_the_trail_page_filters(auditor_client, trail):
    html = auditor_client.get("/audit/", {"mailbox": "accueil@clinique-demo.mssante.fr"}).content
    assert b"899700000002" in html and b"claire.martin" not in html
