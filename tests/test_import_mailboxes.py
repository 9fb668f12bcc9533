import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from enrolment.models import AuditEvent, Mailbox, Membership, Professional

GOOD_CSV = """address,kind,national_id,given_name,family_name
Dr.Martin@Cabinet.MSSante.fr,personal,899700000001,Claire,Martin
accueil@clinique.mssante.fr,organisational,899700000002,Sofia,Benali
accueil@clinique.mssante.fr,organisational,899700000003,Luc,Moreau
"""


def import_file(tmp_path, content, name="mailboxes.csv") -> str:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    out = StringIO()
    call_command("import_mailboxes", str(path), stdout=out)
    return out.getvalue()


def refusal(tmp_path, content) -> str:
    """What the command says when it refuses the file."""
    with pytest.raises(CommandError) as refused:
        import_file(tmp_path, content)
    return str(refused.value)


def database_state():
    return (
        sorted(Mailbox.objects.values_list("address", "kind", "is_active", "updated_at")),
        sorted(Professional.objects.values_list("national_id", "given_name", "family_name")),
        sorted(Membership.objects.values_list("mailbox__address", "professional__national_id")),
    )


@pytest.mark.django_db
def test_a_good_file_creates_mailboxes_professionals_and_memberships(tmp_path):
    out = import_file(tmp_path, GOOD_CSV)

    assert "mailboxes: 2 created" in out
    assert "memberships: 3 created" in out
    shared = Mailbox.objects.get(address="accueil@clinique.mssante.fr")
    assert shared.kind == "organisational"
    assert sorted(shared.members.values_list("family_name", flat=True)) == ["Benali", "Moreau"]
    # Addresses are case-folded, so the verifier's lookup is an exact match.
    assert Mailbox.objects.filter(address="dr.martin@cabinet.mssante.fr").exists()


@pytest.mark.django_db
def test_the_same_file_twice_changes_nothing_the_second_time(tmp_path):
    import_file(tmp_path, GOOD_CSV)
    before = database_state()

    out = import_file(tmp_path, GOOD_CSV)

    assert "(nothing to change)" in out
    assert database_state() == before
    # The first import changed who may log in where: in the trail; the second did not.
    [imported] = AuditEvent.objects.filter(action="mailboxes.import")
    assert imported.details["created"]["memberships"] == 3


@pytest.mark.django_db
def test_a_file_with_one_bad_row_imports_nothing_and_names_the_line(tmp_path):
    bad = GOOD_CSV + "nobody-at-all,personal,899700000009,Jean,Dupont\n"

    message = refusal(tmp_path, bad)

    assert "nothing imported" in message
    assert "line 5: Enter a valid email address." in message
    assert database_state() == ([], [], [])


@pytest.mark.django_db
def test_every_bad_line_is_reported(tmp_path):
    bad = (
        "address,kind,national_id\n"
        "a@x.mssante.fr,shared,899700000001\n"
        "b@x.mssante.fr,personal,not an id\n"
        "c@x.mssante.fr,personal,899700000001\n"
        "c@x.mssante.fr,personal,899700000002\n"
    )
    message = refusal(tmp_path, bad)
    assert "line 2: kind must be personal or organisational, not 'shared'" in message
    assert "line 3: national_id 'not an id' is not a national id" in message
    assert "line 5: personal mailbox c@x.mssante.fr has a second holder" in message
    assert Mailbox.objects.count() == 0


@pytest.mark.django_db
def test_a_personal_mailbox_already_held_by_someone_else_is_refused(tmp_path):
    import_file(tmp_path, GOOD_CSV)
    before = database_state()
    takeover = (
        "address,kind,national_id\n"
        "new@x.mssante.fr,personal,899700000005\n"
        "dr.martin@cabinet.mssante.fr,personal,899700000004\n"
    )
    with pytest.raises(CommandError, match=r"line 3: personal mailbox .* already belongs to 8997"):
        import_file(tmp_path, takeover)
    assert database_state() == before


@pytest.mark.django_db
def test_a_missing_column_is_reported(tmp_path):
    with pytest.raises(CommandError, match="line 1: missing column\\(s\\): kind"):
        import_file(tmp_path, "address,national_id\na@x.fr,899700000001\n")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (GOOD_CSV.replace("family_name", "family_name,Active"), "unknown column(s): Active"),
        (GOOD_CSV + "x@y.mssante.fr,personal,899700000007,Jo,Lee,oops\n", "line 5: more fields"),
        (
            GOOD_CSV.replace("family_name", "family_name,active")
            .replace("Benali", "Benali,1")
            .replace("Moreau", "Moreau,0")
            .replace("Martin\n", "Martin,1\n"),
            "line 4: accueil@clinique.mssante.fr is active=True at line 3",
        ),
        (
            GOOD_CSV + "autre@clinique.mssante.fr,personal,899700000002,Sophie,Benali\n",
            "line 5: 899700000002 has another name at line 3",
        ),
        (GOOD_CSV + "a" * 250 + "@x.fr,personal,899700000008,,\n", "254 characters at most"),
        (GOOD_CSV + "medecin@hôpital.fr,personal,899700000008,,\n", "must be ASCII"),
        (GOOD_CSV + "n@x.mssante.fr,personal,899700000008,Jean\x00,Nul\n", "U+0000"),
        (
            GOOD_CSV.replace("family_name", "family_name,") + "n@x.fr,personal,8997,J,N,oops\n",
            "line 5: a value under a column with no name",
        ),
    ],
)
def test_a_file_that_says_two_things_or_what_cannot_be_stored_is_refused(
    tmp_path, content, expected
):
    message = refusal(tmp_path, content)
    assert "nothing imported" in message and expected in message
    assert database_state() == ([], [], [])
    [row] = AuditEvent.objects.filter(action="mailboxes.import")
    assert row.outcome == "reject"


@pytest.mark.django_db
def test_every_row_longer_than_the_header_is_named(tmp_path):
    long_rows = GOOD_CSV + "x@y.fr,personal,899700000007,Jo,Lee,a\nz@y.fr,personal,8997,Al,Bo,b\n"
    message = refusal(tmp_path, long_rows)
    assert "line 5: more fields" in message and "line 6: more fields" in message


@pytest.mark.django_db
def test_what_spreadsheets_write_is_taken(tmp_path):
    """A trailing empty column, and names with a no-break space or a soft hyphen."""
    spreadsheet = (
        GOOD_CSV.replace("family_name\n", "family_name,\n")
        .replace("Claire,Martin\n", "Claire,Martin\u00a0Dupré,\n")
        .replace("Sofia,Benali\n", "Sofia,Ben\u00adali,\n")
        .replace("Luc,Moreau\n", "Luc,Moreau,\n")
    )
    import_file(tmp_path, spreadsheet)
    assert Professional.objects.get(national_id="899700000001").family_name == "Martin\u00a0Dupré"


@pytest.mark.django_db
def test_a_change_in_the_file_updates_the_rows(tmp_path):
    import_file(tmp_path, GOOD_CSV)
    out = import_file(
        tmp_path,
        GOOD_CSV.replace(",Claire,", ",Claire-Anne,")
        + "accueil@clinique.mssante.fr,organisational,899700000001,,\n",
    )
    assert "professionals: 0 created, 1 updated" in out
    assert "memberships: 1 created" in out
    assert Professional.objects.get(national_id="899700000001").given_name == "Claire-Anne"


@pytest.mark.django_db
def test_json_files_are_imported_too(tmp_path):
    records = [
        {"address": "a@x.mssante.fr", "kind": "personal", "national_id": "899700000001"},
        {"address": "b@x.mssante.fr", "kind": "personal", "national_id": "0"},
    ]
    with pytest.raises(CommandError, match="entry 2: national_id '0'"):
        import_file(tmp_path, json.dumps(records), "boxes.json")
    assert "mailboxes: 1 created" in import_file(tmp_path, json.dumps(records[:1]), "boxes.json")
