"""Usage indicators: Prometheus metrics (/internal/metrics) and the staff summary page.

Counters of the verify path live in each worker (prometheus_client; under gunicorn set
PROMETHEUS_MULTIPROC_DIR so that a scrape adds up every worker's). Figures that the database
knows (devices, enrolments) are read from it at scrape time, so they agree across workers
and restarts.
"""

import logging
import os
from datetime import timedelta

from django.db import DatabaseError
from django.db.models import Count
from django.utils import timezone
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from enrolment.models import AuditEvent, Device, MailSession, Professional

logger = logging.getLogger(__name__)

PROTOCOLS = ("imap", "pop3", "smtp", "submission", "sieve")  # as verify_views accepts

LOGINS = Counter(
    "mss_totp_mail_logins",
    "Mail logins decided by the verifier, by outcome and protocol.",
    ["outcome", "protocol"],
)
VERIFY_SECONDS = Histogram(
    "mss_totp_verify_seconds",
    "Time the verifier took to decide a mail login.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

# What the operator tunes ARGON2_* by (OWASP: as slow as the login rate allows), and what the
# benchmark subtracts to find the rest of a new login's time.
HASH_SECONDS = Histogram(
    "mss_totp_password_hash_seconds",
    "Time of one Argon2id check of a mail password by the verifier.",
    buckets=(0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def observe_login(outcome: str, protocol: str, seconds: float) -> None:
    # The label's values are ours, never the caller's free text (unbounded series).
    LOGINS.labels(outcome, protocol if protocol in PROTOCOLS else "other").inc()
    VERIFY_SECONDS.observe(seconds)


class DatabaseFigures:
    """A collector read at each scrape."""

    def collect(self):
        up = GaugeMetricFamily("mss_totp_database_up", "Whether the database answered the scrape.")
        try:
            figures = list(self._database_figures())
        except DatabaseError:
            # The workers' counters are what an outage must still show (its temporary
            # failures): the scrape goes on without the database's figures.
            logger.exception("metrics: the database did not answer")
            figures = []
        up.add_metric([], 1 if figures else 0)
        yield from (up, *figures)

    def _database_figures(self):
        active = GaugeMetricFamily(
            "mss_totp_active_devices", "Confirmed devices of active professionals."
        )
        active.add_metric([], active_devices())
        enrolments = GaugeMetricFamily(
            "mss_totp_enrolments",
            "Enrolments confirmed, as the audit trail holds them (retention applies).",
            labels=["kind"],
        )
        for kind, count in enrolment_counts().items():
            enrolments.add_metric([kind], count)
        sessions = GaugeMetricFamily("mss_totp_mail_sessions", "Live mail sessions.")
        sessions.add_metric([], live_sessions())
        return active, enrolments, sessions


def exposition() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(LOGINS)
        registry.register(VERIFY_SECONDS)
        registry.register(HASH_SECONDS)
    registry.register(DatabaseFigures())
    return generate_latest(registry)


def active_devices() -> int:
    return Device.objects.filter(confirmed=True, user__professional__is_active=True).count()


def enrolment_counts() -> dict:
    confirmed = AuditEvent.objects.filter(outcome="confirmed", action="enrolment.confirm")
    staff = AuditEvent.objects.filter(outcome="ok", action="staff.enrolment")
    return {"professional": confirmed.count(), "staff": staff.count()}


def live_sessions() -> int:
    return MailSession.objects.filter(
        revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()


def summary(days: int = 7) -> dict:
    """The staff summary page: the state now, and the last ``days`` days from the trail."""
    since = timezone.now() - timedelta(days=days)
    logins = (
        AuditEvent.objects.filter(action="mail.login", at__gte=since)
        .values("outcome", "details__protocol")
        .annotate(count=Count("id"))
        .order_by("outcome", "details__protocol")
    )
    recent_enrolments = AuditEvent.objects.filter(
        action="enrolment.confirm", outcome="confirmed", at__gte=since
    ).count()
    return {
        "days": days,
        "professionals": Professional.objects.filter(is_active=True).count(),
        "active_devices": active_devices(),
        "live_sessions": live_sessions(),
        "enrolments": recent_enrolments,
        "logins": [
            {
                "outcome": row["outcome"],
                "protocol": row["details__protocol"] or "",
                "count": row["count"],
            }
            for row in logins
        ],
        "helpdesk_actions": AuditEvent.objects.filter(
            action__startswith="helpdesk.", at__gte=since
        ).count(),
    }
