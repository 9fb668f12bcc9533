"""API keys of the JSON verify API.

Example usage::

    manage.py api_key create dovecot-1     # prints the token once
    manage.py api_key list
    manage.py api_key revoke dovecot-1
"""

import hashlib
import secrets

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from enrolment import audit
from enrolment.models import ApiKey, AuditEvent


class Command(BaseCommand):
    help = "Create, list and revoke the API keys of POST /api/v1/verify."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("create", help="make a key and print its token once").add_argument("name")
        sub.add_parser("list", help="every key, active or revoked")
        sub.add_parser("revoke", help="stop a key at once").add_argument("name")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_create(self, name, **options):
        longest = ApiKey._meta.get_field("name").max_length
        if not name.strip() or len(name) > longest or not name.isprintable():
            raise CommandError(f"an API key's name is 1 to {longest} printable characters")
        if ApiKey.objects.filter(name=name).exists():
            raise CommandError(f"an API key named {name!r} exists already")
        token = secrets.token_urlsafe(32)
        with transaction.atomic():
            ApiKey.objects.create(name=name, token_hash=hashlib.sha256(token.encode()).hexdigest())
            _audit("api_key.create", name)
        self.stderr.write(f"API key {name!r} created. Its token, shown only now:")
        self.stdout.write(token)

    def handle_list(self, **options):
        for key in ApiKey.objects.order_by("name"):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            self.stdout.write(f"{key.name}\t{state}\tcreated {key.created_at:%Y-%m-%d %H:%M}")

    def handle_revoke(self, name, **options):
        with transaction.atomic():
            updated = ApiKey.objects.filter(name=name, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            if not updated:
                raise CommandError(f"no active API key named {name!r}")
            _audit("api_key.revoke", name)
        self.stdout.write(f"API key {name!r} revoked.")


def _audit(action: str, name: str) -> None:
    """Who may call the verifier is access to every mailbox: in the trail, never the token."""
    audit.write(
        actor_kind=AuditEvent.ActorKind.SYSTEM,
        actor="manage.py api_key",
        action=action,
        target=name,
        outcome="ok",
    )
