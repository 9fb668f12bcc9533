"""The browser's own address, behind the web nginx.

gunicorn sees nginx as the peer of every request, so REMOTE_ADDR alone would put nginx's
address in the audit trail and give every browser on the Internet one shared staff-login
budget: a few wrong passwords a minute would then shut every helpdesk member out.
"""

import functools
import ipaddress

from django.conf import settings


def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is one of TRUSTED_PROXIES (the web nginx): then the last
    address of X-Forwarded-For, the one that nginx wrote (deploy/nginx/web.conf sets it to
    the peer it saw, replacing whatever the browser sent)."""
    peer = request.META.get("REMOTE_ADDR", "")
    if not address_among(peer, tuple(settings.TRUSTED_PROXIES)):
        return peer
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return peer


def address_among(address: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``address`` is one of ``allowed``: addresses or networks (10.0.0.0/24)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A pool bound to [::] sees an IPv4 peer as ::ffff:10.0.0.5.
    parsed = getattr(parsed, "ipv4_mapped", None) or parsed
    return any(parsed in network for network in _networks(allowed))


@functools.lru_cache(maxsize=8)
def _networks(allowed: tuple[str, ...]) -> tuple:
    # The settings are checked at start (portal/env.py env_networks): each entry parses.
    return tuple(ipaddress.ip_network(entry) for entry in allowed)
