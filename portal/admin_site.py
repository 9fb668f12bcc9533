"""The Django admin, kept for superusers' data work, behind the staff login and its code.

Every change made here is audited like any other staff action (enrolment/admin.py), and
needs a code typed within STAFF_RECENT_LOGIN_SECONDS, as the helpdesk's actions do."""

import time

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode


class StaffAdminSite(admin.AdminSite):
    site_header = "MSSanté TOTP"

    def has_permission(self, request):
        user = request.user
        return (
            user.is_active and user.is_superuser and user.is_verified() and _code_is_recent(request)
        )

    def login(self, request, extra_context=None):
        # One login for all staff: password, then the code (portal/staff.py). A superuser
        # whose code is old types a new one and comes back.
        next_url = request.GET.get("next") or reverse("admin:index")
        user = request.user
        if user.is_authenticated and user.is_superuser and user.is_verified():
            return redirect(f"{reverse('staff_code')}?{urlencode({'next': next_url})}")
        return redirect_to_login(next_url, reverse("staff_login"))


def _code_is_recent(request) -> bool:
    from portal.staff import VERIFIED_AT  # portal.staff imports the models, loaded after us

    verified_at = request.session.get(VERIFIED_AT, 0)
    return time.time() - verified_at <= settings.STAFF_RECENT_LOGIN_SECONDS
