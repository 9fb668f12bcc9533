"""The wizard's and the helpdesk's forms under generated input (hypothesis): odd text, huge
values, controls, missing fields. Never a 500, never a change made from a refused form."""

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrolment.models import AuditEvent, Device
from tests.test_bad_input import ODD_TEXT

pytestmark = pytest.mark.django_db

FORMS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
FIELDS = st.dictionaries(
    st.sampled_from(["code", "password1", "password2", "reason", "confirmed", "end", "next"]),
    ODD_TEXT,
    max_size=4,
)


# The ends of the calendar too: a day after 9999-12-31 does not exist.
DATES = st.dates().map(str)


def test_a_nul_in_a_path_query_or_form_is_a_400(helpdesk_client, professional):
    """PostgreSQL's text cannot hold NUL: it must not get as far as a query (a 500)."""
    assert helpdesk_client.get("/helpdesk/", {"q": "ab\0c"}).status_code == 400
    assert helpdesk_client.get("/helpdesk/professionals/8997%00/").status_code == 400
    url = f"/helpdesk/professionals/{professional.national_id}/end-sessions/"
    assert helpdesk_client.post(url, {"reason": "ticket 42\0"}).status_code == 400
    assert helpdesk_client.get("/helpdesk/", {"q": "Martin"}).status_code == 200


@pytest.mark.parametrize(
    "filters", [{"until": "9999-12-31"}, {"since": "0001-01-01"}, {"since": "9999-12-31"}]
)
def test_the_calendars_ends_are_no_bound_not_a_500(auditor_client, filters):
    assert auditor_client.get("/audit/", filters).status_code == 200
    assert auditor_client.get("/audit/export.csv", filters).status_code == 200


def post(client: Client, url: str, data: dict):
    return client.post(url, data)


def test_the_wizard_and_password_forms(professional_client, professional, make_device):
    device = make_device(professional.user)

    @FORMS
    @given(
        url=st.sampled_from(["/enrolment/confirm/", "/password/", "/mail-sessions/"]), data=FIELDS
    )
    def attempt(url, data):
        response = post(professional_client, url, data)
        assert response.status_code < 500

    attempt()
    assert Device.objects.get(user=professional.user).pk == device.pk  # still the phone


def test_the_helpdesk_forms(helpdesk_client, professional, make_device):
    make_device(professional.user)
    base = f"/helpdesk/professionals/{professional.national_id}/"

    @FORMS
    @given(
        action=st.sampled_from(["reset-device", "clear-backoff", "end-sessions", "nope"]),
        data=FIELDS,
    )
    def attempt(action, data):
        data = {**data, "confirmed": "no"}  # a refused or unconfirmed form changes nothing
        response = post(helpdesk_client, f"{base}{action}/", data)
        assert response.status_code in (200, 400, 404)

    attempt()
    assert Device.objects.filter(user=professional.user).exists()
    assert not AuditEvent.objects.filter(action__startswith="helpdesk.").exists()


def test_the_audit_filter_and_search(auditor_client, make_staff):
    from tests.staff_fixtures import log_in

    helpdesk_client = log_in(Client(), make_staff("hugo", "helpdesk"))

    @FORMS
    @given(
        since=ODD_TEXT | DATES,
        until=ODD_TEXT | DATES,
        mailbox=ODD_TEXT,
        professional=ODD_TEXT,
        query=ODD_TEXT,
    )
    def attempt(since, until, mailbox, professional, query):
        filters = {"since": since, "until": until, "mailbox": mailbox, "professional": professional}
        nul = any("\0" in value for value in filters.values())
        assert auditor_client.get("/audit/", filters).status_code == (400 if nul else 200)
        assert auditor_client.get("/audit/export.csv", filters).status_code in (200, 400)
        assert helpdesk_client.get("/helpdesk/", {"q": query}).status_code == (
            400 if "\0" in query else 200
        )

    attempt()
