"""The Django admin, kept for superusers' data work, behind the staff login and its code."""

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse


class StaffAdminSite(admin.AdminSite):
    site_header = "MSSanté TOTP"

    def has_permission(self, request):
        user = request.user
        return user.is_active and user.is_superuser and user.is_verified()

    def login(self, request, extra_context=None):
        # One login for all staff: password, then the code (portal/staff.py).
        return redirect_to_login(request.get_full_path(), reverse("staff_login"))
