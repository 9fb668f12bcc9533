"""Staff members with a role and an enrolled phone (or, not enrolled, their one-time enrolment
token), and a client logged in through the real staff login (password, then code)."""

import time
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from enrolment import seeds, staff_tokens, totp
from enrolment.models import Device

STAFF_PASSWORD = "Helpdesk-Passe-2026"


@dataclass
class StaffMember:
    user: object
    password: str = field(repr=False)
    seed: bytes | None = field(repr=False)
    enrolment_token: str | None = field(default=None, repr=False)

    def code(self, at: float | None = None) -> str:
        return totp.totp(self.seed, time.time() if at is None else at)


@pytest.fixture
def make_staff(db, django_user_model):
    def make(username, *roles, enrolled=True, superuser=False):
        user = django_user_model.objects.create_user(
            username, email=f"{username}@operateur.example", password=STAFF_PASSWORD
        )
        if superuser:
            user.is_superuser = user.is_staff = True
            user.save()
        for role in roles:
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        seed = token = None
        if not enrolled:
            token, _row = staff_tokens.issue(user)
        else:
            seed = seeds.new_seed()
            device = Device(user=user, name="FreeOTP", confirmed=True, confirmed_at=timezone.now())
            with transaction.atomic():
                device.set_seed(seed)
                device.save()
        return StaffMember(user, STAFF_PASSWORD, seed, token)

    return make


def log_in(client, member: StaffMember, at: float | None = None):
    """Password, then the code: the staff login as a browser goes through it."""
    response = client.post(
        "/staff/login/", {"username": member.user.username, "password": member.password}
    )
    assert response.status_code == 302, response.content[:500]
    response = client.post(response["Location"], {"code": member.code(at)})
    assert response.status_code == 302, response.content[:500]
    return client


def present_token(client, member: StaffMember, typed: str | None = None):
    """The enrolment page's first step: the account's one-time token (or ``typed``)."""
    token = member.enrolment_token if typed is None else typed
    return client.post("/staff/enrol/", {"token": token})


def logged_in_staff(client, make_staff, username, role):
    member = make_staff(username, role)
    log_in(client, member)
    client.member = member
    return client


@pytest.fixture
def helpdesk_client(client, make_staff):
    return logged_in_staff(client, make_staff, "alice", "helpdesk")


@pytest.fixture
def auditor_client(client, make_staff):
    return logged_in_staff(client, make_staff, "bruno", "auditor")
