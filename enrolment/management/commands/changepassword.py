"""Django's changepassword, audited: a staff password set from a shell is an action like any
other. Found before django.contrib.auth's own: enrolment comes first in INSTALLED_APPS."""

import getpass

from django.contrib.auth.management.commands import changepassword

from enrolment import audit
from enrolment.models import AuditEvent


class Command(changepassword.Command):
    def handle(self, *args, **options):
        message = super().handle(*args, **options)  # raises unless the password changed
        audit.write(
            actor_kind=AuditEvent.ActorKind.SYSTEM,
            actor="manage.py changepassword",
            action="staff.change_password",
            target=options["username"] or getpass.getuser(),
            outcome="ok",
        )
        return message
