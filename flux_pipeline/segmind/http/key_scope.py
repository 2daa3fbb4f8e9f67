"""Where the API key may go, and the key masked out of any text that leaves the engine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def api_base(base_url: str) -> str:
    """``https://api.segmind.com`` from any of it, ``.../``, ``.../v1`` or ``.../v2``."""
    base = base_url.strip().rstrip("/")
    if base.rsplit("/", 1)[-1] in ("v1", "v2"):
        base = base.rsplit("/", 1)[0]
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"SEGMIND_BASE_URL must be an http(s) URL, got {base_url!r}")
    return base


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, lower case."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def registrable_domain(host: str) -> str:
    """The host's last two labels (``queue.segmind.com`` -> ``segmind.com``); an IP address
    or a single label stands for itself. A plain rule, not the public suffix list: under a
    two-label public suffix (``co.uk``) it groups hosts of different owners."""
    host = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ".".join(host.split(".")[-2:])
    return host


def may_receive_key(base: str, url: str) -> bool:
    """Whether ``url``, named by the API at ``base``, may be sent the key: the API's own origin,
    or an https origin on the API's registrable domain (never http when ``base`` is https)."""
    if origin(url) == origin(base):
        return True
    api, named = urlsplit(base), urlsplit(url)
    if named.scheme != "https" or not named.hostname or not api.hostname:
        return False
    return registrable_domain(named.hostname) == registrable_domain(api.hostname)


class KeyScope:
    """The origins trusted with the key (the API's, plus those :meth:`trust` admits), and
    :meth:`scrub` for any text that may quote it."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self._key = key
        self._trusted = {origin(base)}

    def trust(self, url: str) -> bool:
        """Send the key to ``url``'s origin too, if :func:`may_receive_key` allows it.

        Returns whether the key may go to ``url``.
        """
        if not may_receive_key(self.base, url):
            return False
        self._trusted.add(origin(url))
        return True

    def sends_key(self, url: str) -> bool:
        """Whether a request to ``url`` carries the key (a trusted origin)."""
        return origin(url) in self._trusted

    def scrub(self, text: str) -> str:
        """``text`` with the key masked (also as quoted in a ``repr`` of str or bytes)."""
        key = self._key
        if not key:
            return text
        for form in sorted({key, repr(key)[1:-1], repr(key.encode())[2:-1]}, key=len, reverse=True):
            text = text.replace(form, "***")
        return text
