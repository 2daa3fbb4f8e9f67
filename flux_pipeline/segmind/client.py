"""A synchronous facade over the engine, in the spirit of Segmind's own SDK.

``SegmindClient(...).run(prompt)`` returns the image bytes; ``submit_async`` returns a
:class:`Job` as soon as the submit is accepted. Both run on one private event loop
thread that owns one :class:`SegmindEngine`, so scripts get its pooling, pacing and
retries without touching asyncio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from flux_pipeline.protocol import DEFAULT_BASE_URL, GenerationRequest
from flux_pipeline.segmind.config import EngineConfig
from flux_pipeline.segmind.engine import SegmindEngine
from flux_pipeline.segmind.errors import InferenceFailed, InferenceTimeout, SegmindError
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.stats import EngineStats


class Job:
    """A submitted request: ``request_id`` now, the image bytes from :meth:`wait`."""

    def __init__(self, request_id: str | None, outcome: concurrent.futures.Future[Any]) -> None:
        self.request_id = request_id
        self._outcome = outcome

    def __repr__(self) -> str:
        return f"Job(request_id={self.request_id!r}, done={self._outcome.done()})"

    def done(self) -> bool:
        return self._outcome.done()

    def wait(self, timeout: float | None = None) -> bytes:
        """Block until the image is ready (at most ``timeout`` seconds) and return its bytes."""
        try:
            result: GenerationResult = self._outcome.result(timeout)
        except concurrent.futures.CancelledError:
            raise SegmindError(
                f"the client was closed before request {self.request_id} finished (it may still "
                "complete server-side)"
            ) from None
        except concurrent.futures.TimeoutError:
            raise InferenceTimeout(
                f"request {self.request_id} did not finish within {timeout:g} s",
                request_id=self.request_id,
            ) from None
        return _image_of(result)


class SegmindClient:
    """Blocking Segmind client: ``run`` and ``submit_async`` for ``fast-flux-schnell``.

    ``api_key`` and ``base_url`` default to ``SEGMIND_API_KEY`` / ``SEGMIND_BASE_URL``;
    any other :class:`EngineConfig` field may be passed as a keyword.
    """

    def __init__(
        self, api_key: str | None = None, base_url: str | None = None, **settings: Any
    ) -> None:
        config = EngineConfig(
            api_key=api_key or os.environ.get("SEGMIND_API_KEY", ""),
            base_url=base_url or os.environ.get("SEGMIND_BASE_URL") or DEFAULT_BASE_URL,
        )
        self.config = replace(config, **settings)
        self._ids: dict[str, list[concurrent.futures.Future[str]]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="segmind-client", daemon=True
        )
        self._thread.start()
        self._engine = SegmindEngine(self.config, on_submitted=self._submitted)
        try:
            self._call(self._engine.__aenter__())
        except BaseException:
            self._stop_loop()
            raise

    def __repr__(self) -> str:
        return f"SegmindClient(base_url={self.config.base_url!r}, mode={self.config.mode!r})"

    def __enter__(self) -> SegmindClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def stats(self) -> EngineStats:
        return self._engine.stats

    def run(self, prompt: str, **params: Any) -> bytes:
        """Generate one image and return its bytes (``seed``, ``steps``, ``aspect_ratio``)."""
        return self.submit_async(prompt, **params).wait()

    def submit_async(self, prompt: str, **params: Any) -> Job:
        """Submit one image; returns once the service accepted it (or it already ended)."""
        request = GenerationRequest(key=params.pop("key", "run"), prompt=prompt, **params)
        request_id: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._lock:
            self._ids.setdefault(request.request_key, []).append(request_id)
        outcome = asyncio.run_coroutine_threadsafe(self._generate_one(request), self._loop)
        either: list[concurrent.futures.Future[Any]] = [request_id, outcome]
        concurrent.futures.wait(either, return_when=concurrent.futures.FIRST_COMPLETED)
        if request_id.done():
            return Job(request_id.result(), outcome)
        with self._lock:
            self._ids[request.request_key].remove(request_id)
        result: GenerationResult = outcome.result()  # auth/credit errors raise here
        _image_of(result)  # a refused or failed submit raises here
        return Job(result.request_id, outcome)

    def close(self) -> None:
        """Stop outstanding jobs (their ``wait`` raises), close the pool, stop the loop thread."""
        if self._loop.is_running():
            self._call(self._cancel_outstanding())
            self._call(self._engine.__aexit__(None, None, None))
            self._stop_loop()

    async def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        async with aclosing(self._engine.generate([request])) as results:
            async for result in results:
                return result
        raise RuntimeError("the engine ended without a result")  # only if it was stopped

    @staticmethod
    async def _cancel_outstanding() -> None:
        """Cancel every other task of the private loop: the jobs nobody waited for."""
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _submitted(self, request_key: str, request_id: str) -> None:
        with self._lock:
            waiting = self._ids.get(request_key)
            future = waiting.pop(0) if waiting else None
        if future is not None:
            future.set_result(request_id)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def _image_of(result: GenerationResult) -> bytes:
    if result.status == "COMPLETED" and result.content is not None:
        return result.content
    detail = result.error or "no detail"
    if result.timed_out:
        raise InferenceTimeout(detail, request_id=result.request_id)
    raise InferenceFailed(detail, request_id=result.request_id)
