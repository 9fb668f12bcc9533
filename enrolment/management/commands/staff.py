"""Staff accounts and their roles (Django groups ``helpdesk`` and ``auditor``).

Example usage::

    manage.py staff create alice --role helpdesk    # asks for the password twice
    printf '%s' "$PASSWORD" | manage.py staff create bob --role auditor --password-stdin
    manage.py staff grant alice auditor
    manage.py staff revoke alice helpdesk
    manage.py staff reset-phone alice               # a lost phone: enrols again at next login
    manage.py staff enrolment-token alice           # a new one-time token, replacing the last
    manage.py staff disable alice
    manage.py staff list                            # roles, phone, state, enrolment token

``create``, ``reset-phone`` and ``enrolment-token`` print the one-time token the staff member
needs, besides the password, to enrol a phone: give it to them by another way than the
password. Every change is in the audit trail (never the token), as done by the system account
of this command.
"""

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, no_translations
from django.db import transaction
from django.utils import timezone

from enrolment import audit, staff_tokens
from enrolment.models import AuditEvent, Device, StaffEnrolmentToken
from portal.staff import ROLES


class Command(BaseCommand):
    help = (
        "Create staff accounts, grant and revoke their roles, reset a lost phone; give the "
        "one-time token that the first login needs to enrol a phone."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="a new staff account, and its enrolment token")
        create.add_argument("username")
        create.add_argument("--role", action="append", choices=ROLES, required=True)
        create.add_argument("--email", default="")
        create.add_argument("--password-stdin", action="store_true", help="read it from stdin")
        for name, text in (("grant", "give a role"), ("revoke", "take a role away")):
            command = sub.add_parser(name, help=text)
            command.add_argument("username")
            command.add_argument("role", choices=ROLES)
        reset = sub.add_parser("reset-phone", help="remove the staff phone; a new token")
        reset.add_argument("username")
        sub.add_parser(
            "enrolment-token", help="a new one-time token to enrol a phone (none enrolled yet)"
        ).add_argument("username")
        sub.add_parser("disable", help="no more login").add_argument("username")
        sub.add_parser("list", help="staff accounts: roles, phone, state, enrolment token")

    @no_translations  # operator messages in one language, like the rest of the commands
    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action.replace('-', '_')}")(**options)

    def handle_create(self, username, role, email, password_stdin, **options):
        users = get_user_model()
        _check_username(users, username)
        if users.objects.filter(username=username).exists():
            raise CommandError(f"a user named {username!r} exists already")
        user = users(username=username, email=email)
        password = self._read_password(user, password_stdin)
        with transaction.atomic():
            user.set_password(password)
            user.save()
            for name in role:
                user.groups.add(_group(name))
            self._audit("staff.create", username, {"roles": sorted(role)})
            token, row = self._issue_token(user)
        self.stdout.write(f"Staff account {username!r} created ({', '.join(role)}).")
        self._tell_token(token, row)

    def handle_grant(self, username, role, **options):
        _staff(username).groups.add(_group(role))
        self._audit("staff.grant", username, {"role": role})
        self.stdout.write(f"{username}: {role} granted.")

    def handle_revoke(self, username, role, **options):
        _staff(username).groups.remove(_group(role))
        self._audit("staff.revoke", username, {"role": role})
        self.stdout.write(f"{username}: {role} revoked.")

    def handle_reset_phone(self, username, **options):
        user = _staff(username)
        with transaction.atomic():
            # The token's row first, then the devices': the order the enrolment page locks
            # them in, so that the two take turns instead of deadlocking.
            token, row = self._issue_token(user)
            _, per_model = Device.objects.filter(user=user).delete()
            removed = per_model.get(Device._meta.label, 0)
            self._audit("staff.reset_phone", username, {"devices_removed": removed})
        self.stdout.write(f"{username}: phone removed.")
        self._tell_token(token, row)

    def handle_enrolment_token(self, username, **options):
        user = _staff(username)
        if Device.objects.filter(user=user, confirmed=True).exists():
            raise CommandError(f"{username} has a phone already (reset-phone removes it)")
        with transaction.atomic():
            token, row = self._issue_token(user)
        self._tell_token(token, row)

    def handle_disable(self, username, **options):
        user = _staff(username)
        with transaction.atomic():
            user.is_active = False
            user.save(update_fields=["is_active"])
            staff_tokens.spend(user)  # enabled again, it needs a new one
            self._audit("staff.disable", username, {})
        self.stdout.write(f"{username}: disabled.")

    def handle_list(self, **options):
        users = get_user_model().objects.filter(professional__isnull=True).order_by("username")
        for user in users.prefetch_related("groups"):
            roles = ",".join(sorted(g.name for g in user.groups.all() if g.name in ROLES))
            phone = "phone" if Device.objects.filter(user=user, confirmed=True).exists() else "-"
            state = "active" if user.is_active else "disabled"
            token = _token_state(user)
            self.stdout.write(f"{user.username}\t{roles or '-'}\t{phone}\t{state}\t{token}")

    def _issue_token(self, user) -> tuple[str, StaffEnrolmentToken]:
        token, row = staff_tokens.issue(user)
        details = {"expires_at": str(row.expires_at)}
        self._audit("staff.issue_enrolment_token", user.get_username(), details)
        return token, row

    def _tell_token(self, token: str, row: StaffEnrolmentToken) -> None:
        self.stdout.write(
            f"One-time enrolment token, valid until {row.expires_at:%Y-%m-%d %H:%M %Z}: {token}\n"
            "Give it to the staff member by another way than the password: the first login "
            "asks for it before it shows the key for the phone."
        )

    def _read_password(self, user, from_stdin: bool) -> str:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the two passwords differ")
        try:
            password_validation.validate_password(password, user)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        return password

    def _audit(self, action: str, username: str, details: dict):
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py staff",
            action=action,
            target=username,
            outcome="ok",
            details=details,
        )


def _check_username(users, username: str) -> None:
    """As the user model's own field would check it; and not psc-…, the prefix of the
    professionals' accounts (the first PSC login of that professional would then fail)."""
    field = users._meta.get_field(users.USERNAME_FIELD)
    if not username or len(username) > field.max_length:
        raise CommandError(f"a username is 1 to {field.max_length} characters")
    if username.lower().startswith("psc-"):
        raise CommandError("usernames starting with 'psc-' are the professionals' accounts")
    try:
        field.run_validators(username)
    except ValidationError as invalid:
        raise CommandError(f"username {username!r}: {' '.join(invalid.messages)}") from None


def _token_state(user) -> str:
    row = StaffEnrolmentToken.objects.filter(user=user).first()
    if row is None:
        return "-"
    if row.expires_at <= timezone.now():
        return "token expired"
    presented = " (presented)" if row.presented_at else ""
    return f"token until {row.expires_at:%Y-%m-%d %H:%M %Z}{presented}"


def _group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


def _staff(username: str):
    user = get_user_model().objects.filter(username=username, professional__isnull=True).first()
    if user is None:
        raise CommandError(f"no staff account named {username!r}")
    return user
