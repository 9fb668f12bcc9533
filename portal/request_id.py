"""A request id on every log line and response, so one login can be followed from nginx's
log through the portal's. nginx's own id ($request_id in X-Request-ID) is kept when it is
well-formed; anything else is replaced."""

import contextvars
import logging
import re
import uuid

_current = contextvars.ContextVar("request_id", default="-")
WELL_FORMED = re.compile(r"[A-Za-z0-9-]{8,64}")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if WELL_FORMED.fullmatch(offered) else uuid.uuid4().hex
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on the record (``-`` outside a request)."""

    def filter(self, record):
        record.request_id = _current.get()
        return True


class RequestPathOnlyFilter(logging.Filter):
    """Django's request log lines carry the request itself, whose repr (written out by the
    JSON formatter) holds the query string: a failed PSC callback's authorization code, say.
    Its path is enough to follow it."""

    def filter(self, record):
        request = getattr(record, "request", None)
        if request is not None and not isinstance(request, str):
            record.request = getattr(request, "path", "")
        return True
