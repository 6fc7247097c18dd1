"""The Host names the playground answers to, on any address it listens on (against DNS rebinding).

A web page can make a browser send requests to the playground under the page's own name by
pointing that name's DNS at the playground's address ("DNS rebinding"); the browser then treats
the answers as the page's own and lets the page read them. Such a request always carries that
other name in its Host header, so answering only to names the machine itself owns shuts the door,
whatever address the server listens on.

An IP address as Host is always one the person typed (a page cannot rebind a literal address: its
origin would be that address, not the page's), so every IP literal is accepted; besides it:
localhost, the machine's hostname, fully qualified name and mDNS name (NAME.local), the host of
THREADEDIT_PUBLIC_URL, and the names listed in THREADEDIT_ALLOWED_HOSTS.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from yarl import URL

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "127.0.0.1", "::1"})
_HOST_CHARS = re.compile(r"[A-Za-z0-9._\-\[\]:%]+")  # a name or address and a port, no user@


def own_names() -> frozenset[str]:
    """This machine's names as the operating system knows them (no DNS lookups of other names)."""
    names = set(LOOPBACK_NAMES)
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = ""
    if hostname:
        short = hostname.split(".", 1)[0]
        names.update({hostname, short, f"{short}.local"})
        try:
            names.add(socket.getfqdn(hostname))
        except OSError:
            pass
    return frozenset(n.lower().rstrip(".") for n in names if n)


def allowed_names(extra: frozenset[str] | set[str], public_url: str | None) -> frozenset[str]:
    names = set(own_names())
    names.update(normalise(n) for n in extra if n.strip())
    if public_url:
        public_host = urlsplit(public_url).hostname
        if public_host:
            names.add(normalise(public_host))
    return frozenset(names)


def normalise(host: str) -> str:
    """`Example.COM.`, `[::1]:8765`, `host:80` -> `example.com`, `::1`, `host`."""
    host = host.strip()
    if not _HOST_CHARS.fullmatch(host):
        return ""
    try:
        parsed = URL(f"http://{host}").host or ""
    except ValueError:
        return ""
    return parsed.strip("[]").lower().rstrip(".")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(header: str, names: frozenset[str]) -> bool:
    """Whether a request with this Host header (name or address, with or without a port) may in."""
    host = normalise(header)
    return bool(host) and (is_ip(host) or host in names)
