from django.contrib import admin
from django.urls import include, path
from django.views.i18n import set_language
from mozilla_django_oidc.views import OIDCLogoutView

from enrolment import staff_views, verify_views, views
from portal import psc, staff

urlpatterns = [
    path("", views.home, name="home"),
    path("enrolment/", views.enrolment_start, name="enrolment_start"),
    path("enrolment/scan/", views.enrolment_scan, name="enrolment_scan"),
    path("enrolment/confirm/", views.enrolment_confirm, name="enrolment_confirm"),
    path("enrolment/done/", views.enrolment_done, name="enrolment_done"),
    path("password/", views.mail_password, name="mail_password"),
    path("oidc/", include("mozilla_django_oidc.urls")),  # authenticate/, callback/
    path("login/failed/", psc.failure_view, name="psc_failure"),
    path("logout/", OIDCLogoutView.as_view(), name="logout"),
    path("i18n/setlang/", set_language, name="set_language"),
    path("mail-sessions/", views.mail_sessions_page, name="mail_sessions"),
    path("internal/nginx-auth", verify_views.nginx_auth, name="nginx_auth"),
    path("internal/health/live", verify_views.live, name="live"),
    path("internal/health/ready", verify_views.ready, name="ready"),
    path("api/v1/verify", verify_views.api_verify, name="api_verify"),
    path("api/v1/openapi.json", verify_views.openapi_document, name="openapi"),
    path("internal/metrics", verify_views.metrics, name="metrics"),
    # Staff: login with password and code; the helpdesk; the auditors' trail.
    path("staff/login/", staff.staff_login, name="staff_login"),
    path("staff/code/", staff.staff_code, name="staff_code"),
    path("staff/enrol/", staff.staff_enrol, name="staff_enrol"),
    path("staff/logout/", staff.staff_logout, name="staff_logout"),
    path("helpdesk/", staff_views.helpdesk_search, name="helpdesk_search"),
    path("helpdesk/summary/", staff_views.summary, name="staff_summary"),
    path(
        "helpdesk/professionals/<str:national_id>/",
        staff_views.helpdesk_professional,
        name="helpdesk_professional",
    ),
    path(
        "helpdesk/professionals/<str:national_id>/<slug:action>/",
        staff_views.helpdesk_action,
        name="helpdesk_action",
    ),
    path("audit/", staff_views.audit_trail, name="audit_trail"),
    path("audit/export.<str:fmt>", staff_views.audit_export, name="audit_export"),
    path("admin/", admin.site.urls),
]
