"""Which requests go through a proxy from the environment, and through which transport.

``HTTP_PROXY``, ``HTTPS_PROXY`` and ``ALL_PROXY`` (either case) are honoured as httpx honours
them: the scheme's own variable first, then ``ALL_PROXY``; not for a host ``NO_PROXY`` names
(``*``, a host and its subdomains, ``.host`` for subdomains only, or ``scheme://host[:port]``).
A proxied request goes through httpx's transport (httpcore, which speaks to proxies); every
other request, and every request when no proxy is set, goes through the engine's pool.
``NO_PROXY`` alone changes nothing.
"""

from __future__ import annotations

from urllib.request import getproxies

import httpx

from flux_pipeline.segmind.http.pool import ConnectionPool

#: The variables naming a proxy, as ``getproxies`` calls them (``HTTP_PROXY`` -> ``http``).
_PROXY_SCHEMES = ("http", "https", "all")


def environment_proxies() -> tuple[dict[str, str], list[str]]:
    """The proxies the environment sets by scheme (``all`` for ``ALL_PROXY``), and the
    ``NO_PROXY`` entries; no proxies at all when ``NO_PROXY`` holds ``*``."""
    found = getproxies()
    exempt = [entry.strip().lower() for entry in found.get("no", "").split(",") if entry.strip()]
    if "*" in exempt:
        return {}, []
    proxies = {scheme: found[scheme] for scheme in _PROXY_SCHEMES if found.get(scheme)}
    return proxies, exempt


def exempt_from_proxy(url: httpx.URL, exempt: list[str]) -> bool:
    """Whether a ``NO_PROXY`` entry names ``url``'s host (see the module)."""
    host = url.host.lower()
    for entry in exempt:
        if "://" in entry:
            named = httpx.URL(entry)
            if (
                named.scheme in ("all", url.scheme)
                and named.host == host
                and named.port in (None, url.port)
            ):
                return True
        elif host.endswith(entry if entry.startswith(".") else f".{entry}") or host == entry:
            return True
    return False


def engine_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The engine's pool, behind :class:`ProxyRoutes` when the environment sets a proxy."""
    pool = ConnectionPool(limits)
    proxies, exempt = environment_proxies()
    return ProxyRoutes(pool, proxies, exempt, limits) if proxies else pool


class ProxyRoutes(httpx.AsyncBaseTransport):
    """Each origin to the engine's pool, or to its proxy through httpx's transport."""

    def __init__(
        self,
        direct: ConnectionPool,
        proxies: dict[str, str],
        exempt: list[str],
        limits: httpx.Limits,
    ) -> None:
        self._direct = direct
        self._proxies = proxies
        self._exempt = exempt
        self._limits = limits
        self._via: dict[str, httpx.AsyncHTTPTransport] = {}
        self._routes: dict[tuple[str, str, int | None], httpx.AsyncBaseTransport] = {}

    def _route(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        """The transport for ``url``'s origin (decided once per origin)."""
        origin = (url.scheme, url.host, url.port)
        known = self._routes.get(origin)
        if known is None:
            known = self._routes[origin] = self._choose(url)
        return known

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._route(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        await self._direct.aclose()
        for transport in self._via.values():
            await transport.aclose()

    def _choose(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or exempt_from_proxy(url, self._exempt):
            return self._direct
        if "://" not in proxy:
            proxy = f"http://{proxy}"
        if proxy not in self._via:
            self._via[proxy] = httpx.AsyncHTTPTransport(proxy=proxy, limits=self._limits)
        return self._via[proxy]
