"""Professionals ready to log in by mail: a mailbox, a confirmed device with a known seed, and
a mail password; and the helpers that play the mail client and nginx."""

import time
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.utils import timezone

from enrolment import seeds, totp
from enrolment.models import Device, Mailbox, Membership, Professional

NGINX_SECRET = "test-nginx-shared-secret"


@dataclass
class MailUser:
    professional: Professional
    mailbox: str
    password: str = field(repr=False)
    seed: bytes = field(repr=False)
    device: Device

    def code(self, at: float | None = None) -> str:
        return totp.totp(self.seed, time.time() if at is None else at)

    def secret(self, at: float | None = None) -> str:
        return self.password + self.code(at)


def make_mail_user(
    django_user_model,
    national_id,
    mailbox_address,
    password,
    kind="personal",
    given="Claire",
    family="Martin",
):
    user = django_user_model.objects.create_user(f"psc-{national_id}")
    professional = Professional.objects.create(
        national_id=national_id,
        user=user,
        given_name=given,
        family_name=family,
        mail_password=make_password(password),
    )
    mailbox, _ = Mailbox.objects.get_or_create(address=mailbox_address, defaults={"kind": kind})
    Membership.objects.create(mailbox=mailbox, professional=professional)
    seed = seeds.new_seed()
    device = Device(user=user, name="FreeOTP", confirmed=True, confirmed_at=timezone.now())
    with transaction.atomic():
        device.set_seed(seed)
        device.save()
    return MailUser(professional, mailbox_address, password, seed, device)


@pytest.fixture
def claire(transactional_db, django_user_model):
    # A password with digits, a space, % and a non-ASCII letter: all allowed before the code.
    return make_mail_user(
        django_user_model, "899700000001", "claire.martin@demo.mssante.fr", "p ss%ü 2024"
    )


@pytest.fixture
def nurses(transactional_db, django_user_model):
    """Sofia and Luc, both members of one organisational mailbox."""
    box = "accueil@clinique-demo.mssante.fr"
    return (
        make_mail_user(
            django_user_model,
            "899700000002",
            box,
            "Sofia-Mot-de-Passe",
            "organisational",
            "Sofia",
            "Benali",
        ),
        make_mail_user(
            django_user_model,
            "899700000003",
            box,
            "Luc-Mot-de-Passe",
            "organisational",
            "Luc",
            "Moreau",
        ),
    )


@pytest.fixture
def nginx_secret(settings):
    settings.NGINX_AUTH_SECRET = NGINX_SECRET
    settings.MAIL_BACKEND_IMAP = "127.0.0.1:1143"
    settings.MAIL_BACKEND_SMTP = "127.0.0.1:1025"
    settings.MAIL_BACKEND_TOKEN = "test-backend-token-" + "b" * 32
    return NGINX_SECRET


def nginx_escape(value: str) -> str:
    """What nginx does to Auth-User / Auth-Pass: %-escape space, % and controls, send UTF-8 raw
    (which a WSGI server hands to Django as latin-1)."""
    out = []
    for char in value:
        if char in " %" or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"%{ord(char):02X}")
        else:
            out.append(char)
    return "".join(out).encode("utf-8").decode("latin-1")
