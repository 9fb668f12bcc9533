from django.apps import AppConfig


class EnrolmentConfig(AppConfig):
    name = "enrolment"
    verbose_name = "TOTP enrolment"

    def ready(self):
        from django.contrib.auth.signals import user_logged_out

        from enrolment import audit, checks  # noqa: F401  (registers the system checks)

        user_logged_out.connect(audit.logged_out, dispatch_uid="audit_logged_out")
