"""Requests that carry a NUL character are refused with 400 before any view runs.

PostgreSQL's text cannot hold NUL, so a NUL that reaches a query (a search box, an id in the
path) would be a database error, a 500, rather than the clear refusal it deserves; forms'
fields already refuse it, raw query parameters and path segments did not. The verify
endpoints read headers and JSON, which the verifier checks itself.
"""

from django.core.exceptions import SuspiciousOperation

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class NulInRequest(SuspiciousOperation):
    pass


class RefuseNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _has_nul(request):
            # The message goes to the security log: it names the fault, not the value.
            raise NulInRequest("a NUL character in the request's path, query or form")
        return self.get_response(request)


# They take no query string, and answer bad input in their own protocols (an HTML 400 here
# would be a set-up fault to Dovecot's Lua passdb, and no answer nginx reads).
OWN_ANSWERS = ("/api/", "/internal/nginx-auth")


def _has_nul(request) -> bool:
    if "\0" in request.path:
        return True
    if request.path.startswith(OWN_ANSWERS):
        return False
    if "%00" in request.META.get("QUERY_STRING", ""):
        return True
    if request.method == "POST" and request.content_type in FORM_TYPES:
        return any("\0" in value for values in request.POST.lists() for value in values[1])
    return False
