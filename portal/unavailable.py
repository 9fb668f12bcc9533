"""A seed this node cannot open answers 503, "try again in a few minutes", never "wrong code".

It happens while a key rotation is under way: a professional shown a key sealed on a node that
has the new keyring, who types its code on a node that has not received it yet, or a keyring
whose key has the right id but not the right bytes. Counted as a wrong code, it backed the
professional (or a staff member) off for a fault of ours; as a 500 it told them nothing. Views
let SeedDecryptionError and KeyringError rise (the transaction they were in rolls back, no
failure is counted), and this middleware answers for all of them.
"""

import logging

from django.conf import settings
from django.shortcuts import render

from enrolment import seeds

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 60


class SeedsUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, seeds.SeedDecryptionError | seeds.KeyringError):
            return None
        # The message names a key id or the setting, never a key or a seed.
        logger.error("a seed could not be opened on %s: %s", request.path, exception)
        context = {"helpdesk_phone": settings.HELPDESK_PHONE}
        response = render(request, "503.html", context, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
