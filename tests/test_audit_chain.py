"""The audit trail is tamper-evident: rows edited, deleted, inserted or copied straight in the
database, and seals tampered with, are each reported by `manage.py verify_audit`, naming the
row; an untouched trail verifies clean, also after a retention purge."""

import re
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from enrolment import audit, audit_chain
from enrolment.models import AuditEvent, AuditSeal

pytestmark = pytest.mark.django_db


def events(count, at=None, action="mail.login"):
    rows = []
    for n in range(count):
        row = audit.event(
            actor_kind="professional",
            actor=f"8997000000{n:02d}",
            action=action,
            target=f"pro{n}@demo.mssante.fr",
            outcome="ok" if n % 3 else "reject",
            client_ip="2001:DB8::1" if n % 2 else "192.0.2.10",
            details={"protocol": "imap", "reason": "new_login", "note": "é"},
        )
        if at is not None:  # an older row: its MAC covers the time it says
            row.at = at
            row.mac = audit.row_mac(row)
        rows.append(audit.insert(row))
    return rows


def verify_audit(*arguments) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("verify_audit", *arguments, stdout=out)
    except CommandError as failure:
        return 1, out.getvalue() + str(failure)
    return 0, out.getvalue()


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.fixture
def sealed(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    rows = events(12)
    call_command("seal_audit", stdout=StringIO())
    return rows


def test_an_untouched_trail_verifies_clean(sealed):
    events(3)  # not sealed yet: their MACs are checked all the same
    status, report = verify_audit()
    assert status == 0, report
    assert "intact: 15 rows, 1 seals, 3 rows not sealed yet" in report


def test_an_edited_row_is_reported_by_id(sealed):
    target = sealed[4]
    sql(
        "UPDATE enrolment_auditevent SET outcome = 'ok', actor = 'someone' WHERE id = %s",
        [target.id],
    )
    status, report = verify_audit()
    assert status == 1
    assert f"altered\trow {target.id} was altered or forged" in report
    assert report.count("altered\t") == 1


def test_an_edited_json_detail_is_reported(sealed):
    target = sealed[7]
    row = AuditEvent.objects.get(pk=target.pk)
    details = {**row.details, "reason": "session"}
    AuditEvent.objects.filter(pk=target.pk).update(details=details)
    assert f"row {target.id} was altered" in verify_audit()[1]


def test_a_deleted_row_is_reported_by_id(sealed):
    target = sealed[5]
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [target.id])
    status, report = verify_audit()
    assert status == 1
    assert f"missing\trow {target.id} is missing" in report


def test_a_deleted_last_row_of_a_seal_is_reported(sealed):
    target = sealed[-1]
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [target.id])
    assert f"row {target.id} is missing" in verify_audit()[1]


def test_an_inserted_row_is_reported_by_id(sealed):
    columns = "at, uid, actor_kind, actor, action, target, outcome, client_ip, details, mac"
    sql(
        f"INSERT INTO enrolment_auditevent ({columns}) "
        f"SELECT at, 'forged0000000000000000000000000', actor_kind, 'intruder', action, "
        f"target, outcome, client_ip, details, mac FROM enrolment_auditevent WHERE id = %s",
        [sealed[0].id],
    )
    forged = AuditEvent.objects.order_by("-id").first()
    status, report = verify_audit()
    assert status == 1
    assert f"row {forged.id} was altered or forged" in report


def test_a_row_copied_into_a_deleted_ones_place_is_reported(sealed):
    victim, source = sealed[3], sealed[8]
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [victim.id])
    columns = "at, uid, actor_kind, actor, action, target, outcome, client_ip, details, mac"
    sql(
        f"INSERT INTO enrolment_auditevent (id, {columns}) "
        f"SELECT %s, {columns} FROM enrolment_auditevent WHERE id = %s",
        [victim.id, source.id],
    )
    report = verify_audit()[1]
    assert f"copied\trow {max(victim.id, source.id)} is a copy of row " in report


def test_a_row_slipped_into_a_sealed_gap_is_reported(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    rows = events(3)
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [rows[1].id])  # before the seal
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0  # a gap at sealing time is no tampering
    row = audit.event(actor_kind="staff", actor="intruder", action="helpdesk.reset-device")
    row.id = rows[1].id
    audit.insert(row)  # a valid MAC (the key leaked?), but not in the sealed range
    assert f"inserted\trow {rows[1].id} was inserted after seal 1" in verify_audit()[1]


def test_a_deleted_or_edited_seal_is_reported(sealed, settings):
    events(4)
    call_command("seal_audit", stdout=StringIO())
    events(4)
    call_command("seal_audit", stdout=StringIO())
    assert AuditSeal.objects.count() == 3
    AuditSeal.objects.filter(seq=2).update(count=3)
    assert "seal 2 was altered" in verify_audit()[1]
    sql("DELETE FROM enrolment_auditseal WHERE seq = 2")
    report = verify_audit()[1]
    assert "seals 2-2 are missing" in report
    assert "seal 3 does not follow seal 2" in report


def test_the_newest_rows_and_seals_deleted_together_are_found(sealed):
    events(4)
    out = StringIO()
    call_command("seal_audit", stdout=out)
    anchor = out.getvalue().split("anchor ")[1].strip()  # kept in a log elsewhere
    assert verify_audit("--anchor", anchor)[0] == 0
    sql("DELETE FROM enrolment_auditevent WHERE id > %s", [sealed[-1].id])
    sql("DELETE FROM enrolment_auditseal WHERE seq = 2")
    assert verify_audit()[0] == 0  # what is left is a consistent, shorter trail...
    status, report = verify_audit("--anchor", anchor)
    assert status == 1 and "seal 2 (the anchor given) is not in the chain" in report
    # ...and rows whose seal went missing are found once they are old enough.
    events(2)
    findings = audit_chain.verify(now=timezone.now() + timedelta(hours=2))
    assert [finding.problem for finding in findings] == ["unsealed"]


def test_rows_too_young_wait_for_the_next_seal(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 60
    events(3)
    assert audit_chain.seal() == []
    assert audit_chain.seal(now=timezone.now() + timedelta(seconds=61))[0].count == 3


def test_the_purge_keeps_the_chain_verifiable(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    old = timezone.now() - timedelta(days=200)
    events(5, at=old)
    call_command("seal_audit", stdout=StringIO())
    recent = events(4)

    out = StringIO()
    call_command("purge_audit", stdout=out)  # 183 days by default
    assert "purged 5 rows (1 sealed ranges)" in out.getvalue()
    assert AuditEvent.objects.filter(at__lt=timezone.now() - timedelta(days=183)).count() == 0
    assert AuditEvent.objects.filter(action="audit.purge").exists()
    status, report = verify_audit()
    assert status == 0, report

    # Tampering after a purge is found as before, and a forged purge mark too.
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [recent[1].id])
    assert f"row {recent[1].id} is missing" in verify_audit()[1]
    AuditSeal.objects.filter(seq=2).update(purged_at=timezone.now())
    assert "seal 2 is marked purged falsely" in verify_audit()[1]


on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="two nodes at once")


def on_another_node(work):
    """``work`` on a connection of its own, as another node's timer would run it."""
    failures = []

    def run():
        try:
            work()
        except Exception as failure:  # reported to the test
            failures.append(failure)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


@on_postgresql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("seals_before", [0, 1])
def test_two_sealers_at_once_take_turns(settings, monkeypatch, seals_before):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    if seals_before:
        events(3)
        audit_chain.seal()
    events(5)
    slow_digest = audit_chain._digest

    def digest_slowly(ids_and_macs):  # each sealer holds its transaction a while
        time.sleep(0.3)
        return slow_digest(ids_and_macs)

    monkeypatch.setattr(audit_chain, "_digest", digest_slowly)
    first, first_failures = on_another_node(audit_chain.seal)
    second, second_failures = on_another_node(audit_chain.seal)
    first.join(timeout=30)
    second.join(timeout=30)

    assert first_failures == second_failures == []
    assert list(AuditSeal.objects.values_list("seq", flat=True).order_by("seq")) == [
        *range(1, seals_before + 2)
    ]
    assert audit_chain.verify() == []


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_purge_on_another_node_during_a_verification_is_no_tampering(settings, monkeypatch):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    events(5, at=timezone.now() - timedelta(days=200))
    audit_chain.seal()
    events(4)
    audit_chain.seal()
    real_check_copies = audit_chain._check_copies

    def purged_by_another_node_now():  # the seals are read, the rows not yet
        node, failures = on_another_node(lambda: call_command("purge_audit", stdout=StringIO()))
        node.join(timeout=30)
        assert failures == []
        yield from real_check_copies()

    monkeypatch.setattr(audit_chain, "_check_copies", purged_by_another_node_now)
    assert audit_chain.verify() == []
    assert AuditSeal.objects.filter(purged_at__isnull=False).count() == 1


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_purge_mark_forged_during_a_verification_is_reported(settings, monkeypatch):
    """Rows deleted and their seal marked purged by hand while verify_audit reads: the mark,
    which no purge MACed, is no excuse."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    rows = events(5)
    audit_chain.seal()
    real_check_copies = audit_chain._check_copies

    def forged_now():
        sql("DELETE FROM enrolment_auditevent WHERE id = %s", [rows[2].id])
        sql("UPDATE enrolment_auditseal SET purged_at = now() WHERE seq = 1")
        yield from real_check_copies()

    monkeypatch.setattr(audit_chain, "_check_copies", forged_now)
    problems = {finding.problem for finding in audit_chain.verify()}
    assert {"missing", "seal_altered"} <= problems


@pytest.mark.parametrize(
    ("arguments", "refusal"),
    [
        (["--days", "0"], "--days must be between 1 and 36500"),
        (["--days", "-1"], "--days must be between 1 and 36500"),
        (["--days", "100000000"], "--days must be between 1 and 36500"),
        (["--days", "30"], "--days 30 keeps less than AUDIT_RETENTION_DAYS (183)"),
    ],
)
def test_a_mistyped_retention_purges_nothing(settings, arguments, refusal):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    events(2, at=timezone.now() - timedelta(days=40))
    events(2)
    with pytest.raises(CommandError, match=re.escape(refusal)):
        call_command("purge_audit", *arguments, stdout=StringIO())
    assert AuditEvent.objects.count() == 4


def test_a_shorter_retention_is_purged_when_forced(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    events(2, at=timezone.now() - timedelta(days=40))
    call_command("seal_audit", stdout=StringIO())
    events(2)
    out = StringIO()
    call_command("purge_audit", "--days", "30", "--force", stdout=out)
    assert "purged 2 rows (1 sealed ranges)" in out.getvalue()
    assert verify_audit()[0] == 0


def test_the_verifiers_own_sql_writes_rows_that_verify(claire, settings):
    """A new login's audit row is written by the verifier's single statement (PostgreSQL)
    or by the ORM (SQLite): either way it verifies."""
    from enrolment import verifier

    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    assert verifier.verify(claire.mailbox, claire.secret(), "2001:db8::7", "imap").ok
    assert not verifier.verify(claire.mailbox, "wrong" + claire.code(), "192.0.2.1", "smtp").ok
    call_command("seal_audit", stdout=StringIO())
    assert AuditEvent.objects.filter(action="mail.login").count() == 2
    status, report = verify_audit()
    assert status == 0, report


def test_the_sealer_will_not_seal_over_removed_seals(settings, tmp_path):
    """Delete a row and every seal from its own on: without the anchor file, the next seal
    would cover the hole as a gap. With it, sealing refuses and verify_audit reports."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    settings.AUDIT_ANCHOR_FILE = str(tmp_path / "anchors")
    rows = events(6)
    call_command("seal_audit", stdout=StringIO())
    events(3)
    call_command("seal_audit", stdout=StringIO())
    assert (tmp_path / "anchors").read_text().count("\n") == 2

    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [rows[2].id])
    sql("DELETE FROM enrolment_auditseal")
    with pytest.raises(CommandError, match="does not hold seal 2 of the anchor file"):
        call_command("seal_audit", stdout=StringIO())
    assert not AuditSeal.objects.exists()  # nothing sealed over the hole
    status, report = verify_audit()  # the anchor file is read by default
    assert status == 1 and "seal 2 (the anchor given) is not in the chain" in report


def test_a_lost_anchor_file_stops_the_sealer_until_started_again(settings, tmp_path):
    """Delete the newest rows and their seals, and the node's anchor file (or start a new
    node): the sealer must not take the cut chain for a whole one."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    settings.AUDIT_ANCHOR_FILE = str(tmp_path / "anchors")
    events(6)
    call_command("seal_audit", stdout=StringIO())
    late = events(3)
    call_command("seal_audit", stdout=StringIO())
    sql("DELETE FROM enrolment_auditevent WHERE id = %s", [late[1].id])
    sql("DELETE FROM enrolment_auditseal WHERE seq = 2")
    (tmp_path / "anchors").unlink()

    with pytest.raises(CommandError, match="holds no anchor, but the chain has seals"):
        call_command("seal_audit", stdout=StringIO())
    assert AuditSeal.objects.count() == 1  # nothing sealed over the hole

    # Once the operator has checked the chain, the file starts at its newest seal.
    out = StringIO()
    call_command("seal_audit", "--start-anchor-file", stdout=out)
    assert "anchor file started at seal 1" in out.getvalue()
    assert (tmp_path / "anchors").read_text().startswith("1:")


def test_a_blank_last_line_in_the_anchor_file_is_skipped(settings, tmp_path):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    settings.AUDIT_ANCHOR_FILE = str(tmp_path / "anchors")
    events(2)
    call_command("seal_audit", stdout=StringIO())
    with open(settings.AUDIT_ANCHOR_FILE, "a") as anchors:
        anchors.write("\n  \n")  # an `echo >> anchors`, say
    events(1)
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0


@pytest.mark.parametrize("content", [b"not an anchor\n", b"\xff\xfe\n", None])
def test_an_unusable_anchor_file_is_a_clear_refusal(settings, tmp_path, content):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    anchors = tmp_path / "anchors"
    if content is None:
        anchors.mkdir()  # a directory where the file should be
    else:
        anchors.write_bytes(content)
    settings.AUDIT_ANCHOR_FILE = str(anchors)
    events(2)
    for command in ("seal_audit", "purge_audit"):
        with pytest.raises(CommandError, match=f"AUDIT_ANCHOR_FILE {anchors}"):
            call_command(command, stdout=StringIO())
    assert not AuditSeal.objects.exists()
    status, report = verify_audit()
    assert status == 1 and f"AUDIT_ANCHOR_FILE {anchors}" in report
    assert "nothing verified" in report


def test_an_ipv4_mapped_address_verifies_whatever_prints_it(settings):
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    audit.write(
        actor_kind="service", actor="nginx", action="mail.login", client_ip="::ffff:192.0.2.1"
    )
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0


def test_a_row_put_into_a_purged_range_is_reported(settings):
    """A purged range holds no row: one put back there (from a backup, or forged) is found."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    old = events(3, at=timezone.now() - timedelta(days=200))
    call_command("purge_audit", stdout=StringIO())
    assert verify_audit()[0] == 0
    AuditEvent.objects.bulk_create([old[1]])  # the same row, its MAC intact, at its own id
    status, report = verify_audit()
    assert status == 1
    assert f"inserted\trow {old[1].id} lies in the range purged with seal 1" in report


def test_a_purged_row_put_back_at_a_new_id_is_reported(settings):
    """Put back above the seals (where the sequence is now), its MAC and uid intact: its date
    gives it away, before the next seal covers it and after."""
    settings.AUDIT_SEAL_DELAY_SECONDS = 0
    old = events(3, at=timezone.now() - timedelta(days=200))
    call_command("purge_audit", stdout=StringIO())
    events(2)  # life goes on after the purge
    call_command("seal_audit", stdout=StringIO())
    assert verify_audit()[0] == 0
    resurrected = old[1]
    resurrected.id = None
    AuditEvent.objects.bulk_create([resurrected])
    for _ in range(2):
        status, report = verify_audit()
        assert status == 1
        assert f"inserted\trow {resurrected.id} is dated " in report
        assert "within the period purged" in report
        call_command("seal_audit", stdout=StringIO())


def test_a_seal_claiming_a_huge_range_is_reported_and_not_sealed_onto(sealed):
    AuditSeal.objects.filter(seq=1).update(last_id=10**12)  # no key needed for that
    status, report = verify_audit()  # without building a set of 10**12 ids
    assert status == 1
    assert f"seal 1 holds rows {sealed[0].id}-{10**12}, which no seal does" in report
    events(1)
    with pytest.raises(CommandError, match=r"the newest seal \(1\) does not verify"):
        call_command("seal_audit", stdout=StringIO())
