from django.apps import AppConfig


class EnrolmentConfig(AppConfig):
    name = "enrolment"
    verbose_name = "TOTP enrolment"

    def ready(self):
        from enrolment import checks  # noqa: F401  (registers the system checks)
