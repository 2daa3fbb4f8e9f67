"""The Segmind engine as a Dagster resource; the embedded emulator when nothing is configured."""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from typing import Annotated, Any, Literal, Self

import dagster as dg
from pydantic import Field, PrivateAttr, model_validator

from flux_pipeline.emulator import EmulatorSettings, run_emulator
from flux_pipeline.protocol import DEFAULT_BASE_URL, MODEL
from flux_pipeline.segmind import EngineConfig
from flux_pipeline.segmind.config import BOUNDS
from flux_pipeline.store.provenance import configured_backend

log = logging.getLogger("flux_pipeline.resources.segmind")

#: Key the engine sends to the embedded emulator (it accepts any non-empty key).
EMULATOR_KEY = "SG_0000000000000000"
#: The account's quota from the environment, read when each run starts (like the key).
RPM_VARIABLE = "SEGMIND_REQUESTS_PER_MINUTE"
_DEFAULTS = EngineConfig(api_key="")


def _bound(name: str) -> Any:
    """The engine's bound of setting ``name`` (:data:`BOUNDS`) as field metadata."""
    return Field(**BOUNDS[name])


def environment_quota() -> float | None:
    """``SEGMIND_REQUESTS_PER_MINUTE`` as a positive number; None when unset or empty."""
    raw = os.environ.get(RPM_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # also refuses NaN
        raise ValueError(
            f"{RPM_VARIABLE} must be a positive number of API requests per minute, got {raw!r}"
        )
    return value


class SegmindResource(dg.ConfigurableResource["SegmindResource"]):
    """Segmind's Fast Flux.1 Schnell API through the asyncio engine.

    The service is named by ``api_key`` / ``base_url`` when configured, else by the
    ``SEGMIND_API_KEY`` / ``SEGMIND_BASE_URL`` variables of the process that runs the step,
    read at run time. Dagster rebuilds a resource from run config alone when a run overrides
    any of its fields (launchpad, ``-c run.yaml``, a schedule or backfill), dropping the values
    given in code: reading the environment here means such an override can never turn a
    configured real service into the emulator. Only when neither the config nor the
    environment names a service does each run start the local emulator in-process, and every
    image it makes is synthetic (said in the run log and in every materialization).
    """

    api_key: str | None = Field(
        default=None,
        repr=False,
        description="Segmind API key (SEGMIND_API_KEY); sent only in the x-api-key header.",
    )
    base_url: str | None = Field(
        default=None,
        description=(
            f"API root (SEGMIND_BASE_URL), default {DEFAULT_BASE_URL}; a trailing /v1 is fine. "
            "Leave it and api_key unset to run on the embedded emulator (synthetic images)."
        ),
    )
    model: str = Field(default=MODEL, description="Model slug.")
    mode: Literal["async", "sync", "auto"] = Field(
        default=_DEFAULTS.mode,
        description=(
            "async: v2 submit/poll/result; sync: one v1 POST per image; auto (default): v2, "
            "switching to v1 while a quota binds (1 request per image instead of 2 or more)."
        ),
    )
    max_concurrency: Annotated[int, _bound("max_concurrency")] = Field(
        default=_DEFAULTS.max_concurrency,
        description="Images in flight at once.",
    )
    requests_per_minute: Annotated[float | None, _bound("requests_per_minute")] = Field(
        default=None,
        description=(
            "Your plan's quota in API requests per minute (submit, status, result, v1 POST; "
            f"never media downloads). Unset: {RPM_VARIABLE} at run time, else no fixed cap, "
            "only AIMD on 429 answers."
        ),
    )
    max_requests_per_second: Annotated[float | None, _bound("max_requests_per_second")] = Field(
        default=None,
        description="Deprecated: requests_per_minute / 60.",
    )
    request_timeout: Annotated[float, _bound("request_timeout")] = Field(
        default=_DEFAULTS.request_timeout,
        description="Seconds one HTTP request may take.",
    )
    deadline: Annotated[float, _bound("deadline")] = Field(
        default=_DEFAULTS.deadline,
        description="Seconds one image may take, retries included.",
    )
    max_retries: Annotated[int, _bound("max_retries")] = Field(
        default=_DEFAULTS.max_retries,
        description="Retries of one step after transport errors, 429, 500, 502, 504.",
    )
    backoff_base: Annotated[float, _bound("backoff_base")] = Field(
        default=_DEFAULTS.backoff_base,
        description="First retry backoff cap, seconds (doubles).",
    )
    backoff_max: Annotated[float, _bound("backoff_max")] = Field(
        default=_DEFAULTS.backoff_max,
        description="Largest backoff between retries, seconds (>= backoff_base).",
    )
    max_new_images: Annotated[int | None, _bound("max_new_images")] = Field(
        default=None,
        description="Budget of one run: new images submitted (re-attached jobs never count).",
    )
    max_cost: Annotated[float | None, _bound("max_cost")] = Field(
        default=None,
        description="Budget of one run in the service's cost unit (needs price_per_image).",
    )
    price_per_image: Annotated[float | None, _bound("price_per_image")] = Field(
        default=None,
        description="Cost of one image assumed until the service reports one.",
    )
    max_image_bytes: Annotated[int, _bound("max_image_bytes")] = Field(
        default=_DEFAULTS.max_image_bytes,
        description=(
            "Largest image body read (download, v1 answer, base64 output); past it reading "
            "stops and the image is asked again, then fails."
        ),
    )
    base64: bool = Field(default=False, description="Ask for outputs inline as base64.")
    repost_ambiguous_submits: bool = Field(
        default=False,
        description="Re-POST a submit whose answer never arrived (it may be billed twice).",
    )
    emulator_workers: int = Field(
        default=8, description="Inference slots of the embedded emulator (used without a key)."
    )

    @model_validator(mode="after")
    def _engine_rules(self) -> Self:
        """The engine's own checks across fields (backoff_max >= backoff_base, ...)."""
        self.engine_settings(environment=False)
        return self

    _emulator_url: str | None = PrivateAttr(default=None)
    _emulator: ExitStack | None = PrivateAttr(default=None)

    @property
    def service_key(self) -> str | None:
        """The API key: configured, else ``SEGMIND_API_KEY``; None when neither is set."""
        return self.api_key or os.environ.get("SEGMIND_API_KEY") or None

    @property
    def service_url(self) -> str | None:
        """The API root: configured, else ``SEGMIND_BASE_URL``; None when neither is set."""
        return self.base_url or os.environ.get("SEGMIND_BASE_URL") or None

    @property
    def uses_emulator(self) -> bool:
        """True when neither the config nor the environment names a key or a base URL."""
        return self.service_key is None and self.service_url is None

    @property
    def backend(self) -> str:
        """Who generates this resource's images (:mod:`flux_pipeline.store.provenance`)."""
        return configured_backend(self.service_key, self.service_url)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if not self.uses_emulator:
            return
        stack = ExitStack()
        running = stack.enter_context(run_emulator(EmulatorSettings(workers=self.emulator_workers)))
        self._emulator, self._emulator_url = stack, running.url
        # The run's own log (shown in the Dagster UI), or Python logging outside a run.
        (context.log or log).warning(
            "No Segmind service is configured (SEGMIND_API_KEY and SEGMIND_BASE_URL are unset, "
            "and so are the resource's api_key and base_url): using the EMBEDDED EMULATOR at "
            f"{running.url}. Every image of this run is SYNTHETIC, not generated by Segmind."
        )

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._emulator is not None:
            self._emulator.close()
        self._emulator, self._emulator_url = None, None

    def engine_config(self) -> EngineConfig:
        """The engine settings of this resource (the emulator's URL when it runs one)."""
        if self.uses_emulator:
            if self._emulator_url is None:
                raise RuntimeError("the embedded emulator runs only during resource execution")
            api_key, base_url = EMULATOR_KEY, self._emulator_url
        else:
            api_key, base_url = self.service_key or "", self.service_url or DEFAULT_BASE_URL
        return self.engine_settings(api_key, base_url)

    def engine_settings(
        self, api_key: str = "", base_url: str = DEFAULT_BASE_URL, *, environment: bool = True
    ) -> EngineConfig:
        """The engine fields of this resource as an :class:`EngineConfig` for a service.

        The quota is ``requests_per_minute`` (or its deprecated alias) when set, else
        ``SEGMIND_REQUESTS_PER_MINUTE`` (read now, unless ``environment`` is False).
        """
        per_minute = self.requests_per_minute
        if per_minute is None and self.max_requests_per_second is None and environment:
            per_minute = environment_quota()
        return EngineConfig(
            api_key=api_key,
            base_url=base_url,
            model=self.model,
            mode=self.mode,
            max_concurrency=self.max_concurrency,
            requests_per_minute=per_minute,
            max_requests_per_second=self.max_requests_per_second,
            request_timeout=self.request_timeout,
            deadline=self.deadline,
            max_retries=self.max_retries,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            base64=self.base64,
            max_image_bytes=self.max_image_bytes,
            repost_ambiguous_submits=self.repost_ambiguous_submits,
            max_new_images=self.max_new_images,
            max_cost=self.max_cost,
            price_per_image=self.price_per_image,
        )
