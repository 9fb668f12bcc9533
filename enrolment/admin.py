"""The Django admin, for superusers. Seed ciphertexts and password hashes are never shown.

Whatever the admin adds, changes or deletes, staff accounts and their roles included, is
written to the audit trail in the same transaction, with the fields changed (never their
values): the admin is no way around the trail that `manage.py staff` and the helpdesk keep."""

import json

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction

from enrolment import audit
from enrolment.models import (
    AuditEvent,
    AuditSeal,
    Device,
    Mailbox,
    MailSession,
    Membership,
    Professional,
)


class AuditedAdmin(admin.ModelAdmin):
    """Each admin change also goes to the audit trail, as `admin.add`, `admin.change` or
    `admin.delete` of ``app.model:pk``."""

    def log_addition(self, request, obj, message):
        self._audit(request, "admin.add", obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, "admin.change", obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "admin.delete", obj, "")
        return super().log_deletions(request, queryset)

    def response_action(self, request, queryset):
        # The bulk "delete selected" writes its audit rows, then deletes, outside the atomic
        # block the change and delete pages have: together, or an audited deletion could be
        # one that failed.
        with transaction.atomic():
            return super().response_action(request, queryset)

    @staticmethod
    def _audit(request, action: str, obj, message) -> None:
        # The admin's change message names the fields and inlines changed, not their values.
        if isinstance(message, str):
            message = json.loads(message) if message.startswith("[") else message
        audit.record(
            request,
            action,
            outcome="ok",
            target=f"{obj._meta.label_lower}:{obj.pk}",
            details={"object": str(obj)[:200], "changes": message},
        )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["professional"]


@admin.register(Mailbox)
class MailboxAdmin(AuditedAdmin):
    list_display = ["address", "kind", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["address"]
    inlines = [MembershipInline]


@admin.register(Professional)
class ProfessionalAdmin(AuditedAdmin):
    list_display = ["national_id", "family_name", "given_name", "is_active", "last_login_at"]
    search_fields = ["national_id", "family_name", "given_name"]
    exclude = ["mail_password", "psc_claims"]
    readonly_fields = [
        "user",
        "last_login_at",
        "last_login_method",
        "mail_password_changed_at",
        "access_reset_at",
    ]

    def get_readonly_fields(self, request, obj=None):
        # The national id is whom PSC logs in as this record: changing it would hand the
        # mailboxes to someone else. A new record is made with it, or by the import.
        fields = super().get_readonly_fields(request, obj)
        return [*fields, "national_id"] if obj is not None else fields


class ReadOnlyAdmin(admin.ModelAdmin):
    """Read only here. Devices and sessions change through the helpdesk's pages, which ask
    for a reason, audit it and tell the professional; the trail is written by the site."""

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = ["uuid", "user", "confirmed", "key_id", "confirmed_at", "last_used_at"]
    list_filter = ["confirmed", "key_id"]
    fields = ["user", "name", "confirmed", "algorithm", "digits", "period", "drift", "key_id"]
    readonly_fields = fields


@admin.register(MailSession)
class MailSessionAdmin(ReadOnlyAdmin):
    list_display = ["mailbox", "professional", "protocol", "client_network", "last_seen_at"]
    exclude = ["credential_digest"]


@admin.register(AuditSeal)
class AuditSealAdmin(ReadOnlyAdmin):
    list_display = ["seq", "first_id", "last_id", "count", "sealed_at", "purged_at"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_kind", "actor", "action", "target", "outcome"]
    list_filter = ["action", "outcome", "actor_kind"]


# Staff accounts and roles: `manage.py staff` is their way in, but the admin can edit them too,
# so its edits are audited the same way.
admin.site.unregister(get_user_model())
admin.site.unregister(Group)


@admin.register(get_user_model())
class AuditedUserAdmin(AuditedAdmin, UserAdmin):
    pass


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdmin, GroupAdmin):
    pass
