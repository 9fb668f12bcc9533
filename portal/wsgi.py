"""WSGI entry point for gunicorn.

Django runs its system checks for manage.py commands but not under gunicorn; the keyrings'
and PSC's checks are run here too, so that a worker never starts without a usable key, nor
with the demo's stand-in provider in production, nor with nginx configured and no token for
the IMAP backend.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

application = get_wsgi_application()

from enrolment.checks import refuse_to_start_misconfigured  # noqa: E402

refuse_to_start_misconfigured()
