"""Who generated an image: the backend is part of a generation's identity.

A backend is named by a string kept with every ledger entry and lineage row:

- ``embedded-emulator`` (:data:`EMBEDDED_EMULATOR`): the in-process emulator started when no
  service is configured; its images are synthetic;
- otherwise the API root of the configured service without credentials, query or a trailing
  ``/v1``, e.g. ``https://api.segmind.com`` (:func:`service_backend`).

Reuse, re-attach and cross-partition copies happen only within one backend: the ledger is kept
per backend (:func:`backend_slug` names its folder) and an image's file name is derived from the
backend and the request key (:func:`image_id`), so two backends, or two request keys, never
share a file. Rows and entries that name no backend are *unknown*: never reused by a build, and
counted as synthetic by exports (:func:`is_service`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from flux_pipeline.protocol import DEFAULT_BASE_URL

EMBEDDED_EMULATOR: Final = "embedded-emulator"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def service_backend(base_url: str) -> str:
    """The backend name of a service at ``base_url``: scheme, host, port and path, never a
    user, password or query; a trailing ``/``, ``/v1`` or ``/v2`` is dropped."""
    url = urlsplit(base_url.strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"SEGMIND_BASE_URL must be an http(s) URL, got {base_url!r}")
    host = url.netloc.rsplit("@", 1)[-1].lower()
    path = url.path.rstrip("/")
    if path.rsplit("/", 1)[-1] in ("v1", "v2"):
        path = path.rsplit("/", 1)[0]
    return urlunsplit((url.scheme.lower(), host, path, "", ""))


def configured_backend(api_key: str | None, base_url: str | None) -> str:
    """The backend a run uses: the embedded emulator when neither a key nor a base URL is
    configured, else the service at ``base_url`` (default Segmind's API)."""
    if api_key is None and base_url is None:
        return EMBEDDED_EMULATOR
    return service_backend(base_url or DEFAULT_BASE_URL)


def is_service(backend: str | None) -> bool:
    """True for images a configured service made: not the embedded emulator's, not unknown."""
    return backend is not None and backend != EMBEDDED_EMULATOR


def backend_slug(backend: str) -> str:
    """A folder name for ``backend`` (``https://api.segmind.com`` -> ``https-api.segmind.com``)
    with a short hash, so backends whose readable parts coincide never share a folder."""
    readable = _UNSAFE.sub("-", backend).strip("-")[:80]
    return f"{readable}-{hashlib.sha256(backend.encode()).hexdigest()[:8]}"


def image_id(backend: str, request_key: str) -> str:
    """16 hex digits naming one backend's image of one request key (in file names)."""
    return hashlib.sha256(f"{backend}\n{request_key}".encode()).hexdigest()[:16]
