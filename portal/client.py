"""The browser's own address, behind the web nginx.

gunicorn sees nginx as the peer of every request, so REMOTE_ADDR alone would put nginx's
address in the audit trail and give every browser on the Internet one shared staff-login
budget: a few wrong passwords a minute would then shut every helpdesk member out.
"""

import ipaddress

from django.conf import settings


def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is one of TRUSTED_PROXIES (the web nginx): then the last
    address of X-Forwarded-For, the one that nginx wrote (deploy/nginx/web.conf sets it to
    the peer it saw, replacing whatever the browser sent)."""
    peer = request.META.get("REMOTE_ADDR", "")
    if peer not in settings.TRUSTED_PROXIES:
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return peer
