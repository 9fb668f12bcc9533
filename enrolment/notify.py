"""Telling the professional, by email to their own mailbox, of every change to their access."""

import logging
import smtplib

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import translation

from enrolment.models import Mailbox, Professional

logger = logging.getLogger(__name__)


def recipients(professional: Professional) -> list[str]:
    mailboxes = professional.mailboxes.filter(is_active=True)
    personal = [m.address for m in mailboxes if m.kind == Mailbox.Kind.PERSONAL]
    return personal or sorted(m.address for m in mailboxes)


def notify(professional: Professional, event: str) -> bool:
    """Send templates/email/<event>.txt (its first line is the subject) in French, then in
    each other language of the site: the message reaches a mailbox, read by whoever reads it,
    not the browser whose language we knew (and the helpdesk's events have none). False when
    it could not be sent: the change it tells of is made already, and must not be undone by a
    mail server that is down (it is logged, and the caller may say so)."""
    to = recipients(professional)
    if not to:
        return False
    subject, body = _rendered(event, professional, settings.LANGUAGE_CODE)
    for language, _name in settings.LANGUAGES:
        if language != settings.LANGUAGE_CODE:
            other_subject, other_body = _rendered(event, professional, language)
            body += f"\n\n-- {other_subject}\n\n{other_body}"
    try:
        send_mail(subject, body + "\n", None, to)
    except (OSError, smtplib.SMTPException) as error:
        logger.error("email %s to professional %s not sent: %s", event, professional.pk, error)
        return False
    return True


def _rendered(event: str, professional: Professional, language: str) -> tuple[str, str]:
    with translation.override(language):
        text = render_to_string(
            f"email/{event}.txt",
            {"professional": professional, "helpdesk_phone": settings.HELPDESK_PHONE},
        )
    subject, _, body = text.strip().partition("\n")
    return subject.strip(), body.strip()
