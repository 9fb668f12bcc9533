"""Reading configuration from the environment.

Every secret can also come from a file named by the same variable with a ``_FILE`` suffix
(``SECRET_KEY_FILE=/run/secrets/portal-secret-key``), the way container and systemd secrets are
handed over. A value that cannot be parsed stops the start with the variable's name in the message.
"""

import ipaddress
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_networks(name: str, default: str = "") -> list[str]:
    """A list of addresses or networks (10.0.0.0/24, 2001:db8::/64), each checked now: a typo
    stops the start with the variable's name, not a caller refused later. A network with host
    bits (10.0.1.7/16) is refused too: it would silently allow the whole /16."""
    entries = env_list(name, default)
    for entry in entries:
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {entry!r} is not an address or a network"
            ) from None
    return entries


def env_ip_and_port(name: str, default: str) -> str:
    """IP:PORT ([2001:db8::1]:143 for IPv6) of a server that nginx's mail proxy connects to:
    nginx takes an address in Auth-Server, not a host name, and a port of 1-65535. Checked
    now: else every login would be accepted, its code spent, and then fail at nginx."""
    raw = env_str(name, default).strip()
    if raw:  # empty: no such backend (MAIL_BACKEND_POP3's default)
        split_ip_and_port(raw, name)
    return raw


def split_ip_and_port(value: str, name: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ImproperlyConfigured(
            f"{name} must be IP:PORT (an address, not a name; [IPv6]:PORT), not {value!r}"
        )
    return host, number


def env_secret(name: str, default: str = "") -> str:
    """The value of NAME, or the content of the file named by NAME_FILE (one trailing newline
    stripped). Setting both is refused: which one wins would be a guess."""
    direct = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if direct is not None and file_name is not None:
        raise ImproperlyConfigured(f"set {name} or {name}_FILE, not both")
    if file_name is None:
        return default if direct is None else direct
    try:
        content = Path(file_name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{name}_FILE: cannot read {file_name}: {exc.strerror}"
        ) from None
    return content.removesuffix("\n")
