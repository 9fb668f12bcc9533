from django.contrib.admin.apps import AdminConfig


class StaffAdminConfig(AdminConfig):
    """django.contrib.admin with our site: verified superusers only (portal/admin_site.py)."""

    default_site = "portal.admin_site.StaffAdminSite"
