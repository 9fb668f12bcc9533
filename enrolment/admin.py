"""The Django admin, for superusers. Seed ciphertexts and password hashes are never shown."""

from django.contrib import admin

from enrolment.models import (
    AuditEvent,
    AuditSeal,
    Device,
    Mailbox,
    MailSession,
    Membership,
    Professional,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["professional"]


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["address", "kind", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["address"]
    inlines = [MembershipInline]


@admin.register(Professional)
class ProfessionalAdmin(admin.ModelAdmin):
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
