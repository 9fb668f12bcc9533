from django.contrib import admin
from django.urls import include, path
from django.views.i18n import set_language
from mozilla_django_oidc.views import OIDCLogoutView

from enrolment import verify_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("enrolment/", views.enrolment_start, name="enrolment_start"),
    path("enrolment/scan/", views.enrolment_scan, name="enrolment_scan"),
    path("enrolment/confirm/", views.enrolment_confirm, name="enrolment_confirm"),
    path("enrolment/done/", views.enrolment_done, name="enrolment_done"),
    path("password/", views.mail_password, name="mail_password"),
    path("oidc/", include("mozilla_django_oidc.urls")),  # authenticate/, callback/
    path("logout/", OIDCLogoutView.as_view(), name="logout"),
    path("i18n/setlang/", set_language, name="set_language"),
    path("mail-sessions/", views.mail_sessions_page, name="mail_sessions"),
    path("internal/nginx-auth", verify_views.nginx_auth, name="nginx_auth"),
    path("internal/health/live", verify_views.live, name="live"),
    path("api/v1/verify", verify_views.api_verify, name="api_verify"),
    path("api/v1/openapi.json", verify_views.openapi_document, name="openapi"),
    path("admin/", admin.site.urls),
]
