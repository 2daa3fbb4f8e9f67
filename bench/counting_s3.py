"""moto's S3 server, counting every request it serves by S3 verb: the whole run, as S3 sees it.

``python -m bench.counting_s3 PORT`` serves moto's app on loopback; ``GET /_bench/counts``
answers the counts so far as JSON and ``POST /_bench/reset`` zeroes them. Verbs as S3 bills
them: ``PUT``, ``COPY`` (a PUT with ``x-amz-copy-source``), ``GET`` (an object), ``LIST`` (a GET
of a bucket), ``HEAD``, ``DELETE``; anything else under its HTTP method.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def s3_verb(environ: dict[str, Any]) -> str:
    """The S3 verb of one path-style request."""
    method = environ["REQUEST_METHOD"]
    has_key = bool(environ.get("PATH_INFO", "").lstrip("/").partition("/")[2])
    if method == "PUT":
        return "COPY" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PUT"
    if method == "GET":
        return "GET" if has_key else "LIST"
    if method == "POST" and "delete" in environ.get("QUERY_STRING", ""):
        return "DELETE"
    return str(method)


def counting(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/_bench/counts":
            with _lock:
                body = json.dumps(dict(_counts)).encode()
            start_response("200 OK", [("content-type", "application/json")])
            return [body]
        if path == "/_bench/reset":
            with _lock:
                _counts.clear()
            start_response("204 No Content", [])
            return []
        with _lock:
            _counts[s3_verb(environ)] += 1
        return app(environ, start_response)

    return serve


def main() -> None:
    port = int(sys.argv[1])
    app = counting(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True).serve_forever()


if __name__ == "__main__":
    main()
