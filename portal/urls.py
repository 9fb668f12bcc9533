from django.contrib import admin
from django.urls import include, path
from django.views.i18n import set_language
from mozilla_django_oidc.views import OIDCLogoutView

from enrolment import views

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
    path("admin/", admin.site.urls),
]
