"""purge_mail_state: the ended sessions and the refilled buckets go, the rest stays."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from enrolment import clock
from enrolment.models import AddressThrottle, AuditEvent, MailSession
from tests.test_verifier import nginx_ask, ok

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nginx(nginx_secret):
    return nginx_secret


def test_old_ended_sessions_and_refilled_buckets_are_deleted(claire, settings):
    assert ok(nginx_ask(claire.mailbox, claire.secret()))  # a live session: it stays
    live = MailSession.objects.get()
    long_ago = timezone.now() - timedelta(days=settings.MAIL_SESSION_RETENTION_DAYS + 1)
    recently = timezone.now() - timedelta(days=1)
    for revoked_at, retried in ((long_ago, None), (recently, None), (long_ago, recently)):
        MailSession.objects.create(
            mailbox=live.mailbox,
            professional=live.professional,
            device=live.device,
            credential_digest="f" * 64,
            client_network="192.0.2.99/32",
            protocol="imap",
            created_at=revoked_at - timedelta(hours=1),
            last_seen_at=revoked_at,
            expires_at=revoked_at + timedelta(hours=11),
            revoked_at=revoked_at,
            last_refused_at=retried,  # a client still retrying its string keeps the row
        )
    now = clock.now()
    burst = settings.THROTTLE_ADDRESS_BURST
    AddressThrottle.objects.create(address="198.51.100.1", tokens=0, updated_at=now - 3600)
    AddressThrottle.objects.create(address="198.51.100.2", tokens=0, updated_at=now - 1)
    AddressThrottle.objects.create(address="198.51.100.3", tokens=burst - 1, updated_at=now)

    out = StringIO()
    call_command("purge_mail_state", stdout=out)

    assert "deleted 1 ended mail sessions, 1 refilled buckets" in out.getvalue()
    kept = MailSession.objects.values_list("revoked_at", "last_refused_at")
    assert set(kept) == {(None, None), (recently, None), (long_ago, recently)}
    assert set(AddressThrottle.objects.values_list("address", flat=True)) == {
        "198.51.100.2",
        "198.51.100.3",
    }
    assert AuditEvent.objects.get(action="mail_state.purge").details == {
        "sessions": 1,
        "buckets": 1,
    }
    assert ok(nginx_ask(claire.mailbox, claire.secret()))  # the live session still works
