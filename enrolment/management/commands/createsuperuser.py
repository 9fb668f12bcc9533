"""Django's createsuperuser, audited: a superuser is the most powerful account there is, and
every action of everyone goes in the trail (``staff create`` is the usual way to add staff).
Found before django.contrib.auth's own: enrolment comes first in INSTALLED_APPS."""

from django.contrib.auth import get_user_model
from django.contrib.auth.management.commands import createsuperuser

from enrolment import audit
from enrolment.models import AuditEvent


class Command(createsuperuser.Command):
    def handle(self, *args, **options):
        superusers = get_user_model()._default_manager.filter(is_superuser=True)
        before = set(superusers.values_list("pk", flat=True))
        super().handle(*args, **options)
        for user in superusers.exclude(pk__in=before):
            audit.write(
                actor_kind=AuditEvent.ActorKind.SYSTEM,
                actor="manage.py createsuperuser",
                action="staff.create_superuser",
                target=user.get_username(),
                outcome="ok",
            )
