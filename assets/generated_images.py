"""`generated_images`: each daily partition renders every prompt of the table via Segmind; a
backfill run builds a range of partitions with one engine."""

import warnings
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd

from flux_pipeline.assets.metadata import arrow_schema, image_markdown
from flux_pipeline.assets.partition_lineage import LINEAGE_READ_SCHEMA, read_partition_lineage
from flux_pipeline.assets.partitions import backfill_policy, daily_partitions
from flux_pipeline.assets.prompt_table import prompt_table, read_prompt_table
from flux_pipeline.assets.segmind_pool import SEGMIND_POOL, PoolShare, paced_for_pool, pool_share
from flux_pipeline.builder import BuildProgress, BuildReport, RangeReport, build_partitions
from flux_pipeline.prompts import RangeRequests
from flux_pipeline.quality.limits import QualityLimits
from flux_pipeline.report.metrics import generated_cost
from flux_pipeline.resources.segmind import SegmindResource
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.segmind import EngineConfig
from flux_pipeline.segmind.errors import AuthenticationError, InsufficientCredits
from flux_pipeline.store.account_slot import AccountSlot
from flux_pipeline.store.lineage import LINEAGE_DESCRIPTIONS
from flux_pipeline.store.storage import ObjectStore

#: Seconds between two progress lines in the run log.
PROGRESS_INTERVAL = 5.0
#: Thumbnails on the contact sheet (the sheet is stored in the event log: keep it small).
CONTACT_SHEET_LIMIT = 24
CONTACT_SHEET_COLUMNS = 6
CONTACT_SHEET_THUMB = 128
#: The lineage columns a partition's metadata reads (the counts, `cost`, the contact sheet).
METADATA_INPUTS = (
    "prompt_id",
    "status",
    "cached",
    "request_key",
    "inference_time",
    "cost",
    "image_uri",
    "blank",
)


with warnings.catch_warnings():
    # `backfill_policy` is a beta parameter in Dagster 1.13: say so once, in the docs, not on
    # every load of the code location.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)

    @dg.asset(
        partitions_def=daily_partitions,
        deps=[prompt_table],
        kinds={"segmind", "parquet"},
        backfill_policy=backfill_policy(),
        pool=SEGMIND_POOL,
    )
    def generated_images(
        context: dg.AssetExecutionContext,
        segmind: SegmindResource,
        storage: ObjectStoreResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        """Every prompt of the stored table rendered by Fast Flux.1 Schnell, per daily partition.

        A run builds one partition, or a backfill's range of up to `FLUX_MAX_PARTITIONS_PER_RUN`
        with one engine. Stored images are reused without an API call; a FAILED image is a lineage
        row, not a failed run. Each metadata key is described in docs/OUTPUTS.md."""
        partitions = list(context.partition_keys)
        limits = quality_limits()  # a bad FLUX_* quality setting fails here, before any request
        store = storage.store()
        table = read_prompt_table(store)
        requests = RangeRequests(table, partitions)  # each partition's, made when it is built
        share = pool_share(context.instance)
        configured = segmind.engine_config()
        config = paced_for_pool(configured, share)
        shared = {
            # The Segmind API URL, or the embedded emulator (whose images are synthetic).
            "backend": _backend(segmind),
            # The range this run builds: `KEY` or `FIRST...LAST (N partitions)`.
            "run_partitions": _describe(partitions),
            # The pace of the run's API requests: `requests_per_minute` / the pool's slots.
            "quota_share": _quota_share(configured, config, share),
        }
        context.add_asset_metadata(shared)
        total = len(table) * len(partitions)
        line = f"{shared['run_partitions']}: {total} images to build; {shared['quota_share']}"
        paced_alone = config.requests_per_minute is not None and not share.limited
        (context.log.warning if paced_alone else context.log.info)(line)
        synthetic = "synthetic " if segmind.uses_emulator else ""

        def log_progress(progress: BuildProgress) -> None:
            context.log.info(
                f"{progress.done}/{progress.total} images, {progress.rate:.2f}/s, "
                f"{progress.failed} failed, {progress.cached} cached, "
                f"{progress.elapsed:.0f}s elapsed"
            )

        def partition_done(report: BuildReport) -> None:
            metadata = _partition_metadata(store, report, synthetic)
            context.add_asset_metadata(metadata, partition_key=report.partition)
            context.log.info(
                f"partition {report.partition} done: {report.completed} completed, "
                f"{report.failed} failed, {report.cached} cached, {report.reused} reused, "
                f"{report.api_requests} HTTP requests"
            )

        # The pool's share holds only if every run using the account holds a slot of it, queued
        # or not: the build waits for one of the pool's slots in the store before any request.
        account = (
            AccountSlot(store, slots=share.slots, owner=context.run.run_id, say=context.log.info)
            if share.limited
            else None
        )
        try:
            report = build_partitions(
                requests,
                store=store,
                engine_config=config,
                backend=segmind.backend,
                progress=log_progress,
                progress_interval=PROGRESS_INTERVAL,
                on_partition_done=partition_done,
                account=account,
                blank_luma_std=limits.blank_luma_std,
            )
        except (AuthenticationError, InsufficientCredits) as err:
            raise dg.Failure(description=str(err), allow_retries=False) from err
        # The engine's counters are the run's totals: in a range run, whose partitions share one
        # engine, they are named `run_api_requests` and so on.
        prefix = "" if len(partitions) == 1 else "run_"
        context.add_asset_metadata({prefix + k: v for k, v in _engine_metadata(report).items()})
        budget = _budget_metadata(config, report)
        context.add_asset_metadata(budget)
        if report.engine.budget_refused:
            # Every lineage file is written: the rows left are FAILED and not final, so a
            # re-run with a bigger budget submits exactly those and pays nothing twice.
            raise dg.Failure(
                description=_budget_message(report), metadata=budget, allow_retries=False
            )
        return dg.MaterializeResult()


def quality_limits() -> QualityLimits:
    """The quality settings of this process's environment; a bad one fails the step."""
    try:
        return QualityLimits.from_env()
    except ValueError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err


def _partition_metadata(store: ObjectStore, report: BuildReport, synthetic: str) -> dict[str, Any]:
    """One partition's materialization metadata, from its report and its lineage file (only
    :data:`METADATA_INPUTS`: a projection)."""
    lineage = read_partition_lineage(store, report.partition, columns=METADATA_INPUTS)
    if lineage is None:
        raise dg.Failure(description=f"the build wrote no lineage for partition {report.partition}")
    completed = lineage[lineage["status"] == "COMPLETED"]
    inference = completed.loc[~completed["cached"].astype(bool), "inference_time"].dropna()
    metadata: dict[str, Any] = {
        "dagster/row_count": len(lineage),
        "dagster/column_schema": arrow_schema(LINEAGE_READ_SCHEMA, LINEAGE_DESCRIPTIONS),
        # Row counts; `cached`: reused from a generation made for another partition.
        "completed": report.completed,
        "failed": report.failed,
        "cached": report.cached,
        "blank": int(completed["blank"].astype("boolean").fillna(False).sum()),
        # Rows this build took from storage without an API call.
        "reused": report.reused,
        # Over the images generated for this partition; None when none was.
        "inference_time_p50_s": _quantile(inference, 0.5),
        "inference_time_p95_s": _quantile(inference, 0.95),
        # HTTP requests spent on this partition's images, downloads included (lineage `attempts`,
        # which `generation_metrics` sums).
        "http_requests": report.api_requests,
        # The reported cost of the images generated for this partition.
        "cost": generated_cost(lineage),
        "elapsed_s": round(report.elapsed_s, 2),
        "images": dg.MetadataValue.path(report.images_prefix_uri),
        "lineage": dg.MetadataValue.path(report.lineage_uri),
    }
    if len(completed):
        metadata["contact_sheet"] = _contact_sheet(store, report.partition, completed, synthetic)
    return metadata


def _engine_metadata(report: RangeReport) -> dict[str, Any]:
    """The engine's exact counters over the run (one partition's own in a one-partition run)."""
    engine = report.engine
    return {
        # Submits, status polls and result fetches (v1 POSTs in sync mode), retries included,
        # media downloads excluded.
        "api_requests": engine.api_requests,
        "media_downloads": engine.requests["download"],
        # Requests re-sent after a 429, 5xx or transport error.
        "retried_requests": engine.retries,
        # The sum of the per-image cost the service reported, in its units.
        "reported_cost": engine.cost,
        # The configured protocol, and the one(s) the images went through (`auto` moves new
        # images to v1 while a quota binds; the next three say how).
        "mode": engine.mode,
        "mode_used": engine.mode_used,
        "completed_async": engine.completed_by_mode.get("async", 0),
        "completed_sync": engine.completed_by_mode.get("sync", 0),
        "mode_switches": engine.mode_switches,
        # API requests per completed image.
        "requests_per_image": _rounded(engine.requests_per_image),
        # Object-store requests of the build by verb (S3 API calls on an S3 root), and per
        # generated image.
        "storage_requests": dict(sorted(report.storage_requests.items())),
        "storage_requests_per_image": _rounded(report.storage_requests_per_image),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _budget_metadata(config: EngineConfig, report: RangeReport) -> dict[str, Any]:
    """The run's running total against its budget, as the budget guard counted it: new images
    (accepted submits, maybe-billed ones included) and their cost (reported, else estimated)."""
    engine = report.engine
    return {
        "run_new_images": engine.budget_spent_images,
        "run_max_new_images": config.max_new_images,
        "run_cost": round(engine.budget_spent_cost, 6),
        "run_max_cost": config.max_cost,
        # Requests the budget refused: FAILED rows, not final, that a re-run submits.
        "run_left_by_budget": engine.budget_refused,
    }


def _budget_message(report: RangeReport) -> str:
    """Why the run stopped short (the first refusal's reason names the limit), how to continue."""
    engine = report.engine
    return (
        f"{engine.budget_reason}: {engine.budget_spent_images} new images, "
        f"{engine.budget_refused} left; raise the budget and re-run to continue"
    )


def _describe(partitions: Sequence[str]) -> str:
    """``KEY`` or ``FIRST...LAST (N partitions)``."""
    if len(partitions) == 1:
        return partitions[0]
    return f"{partitions[0]}...{partitions[-1]} ({len(partitions)} partitions)"


def _quota_share(configured: EngineConfig, paced: EngineConfig, share: PoolShare) -> str:
    """What this run's requests are paced at, and why."""
    if configured.requests_per_minute is None or paced.requests_per_minute is None:
        return f"no requests_per_minute set: not paced to a quota ({share.source})"
    return (
        f"{paced.requests_per_minute:g} API requests/min = requests_per_minute "
        f"{configured.requests_per_minute:g} / {share.slots} ({share.source})"
    )


def _quantile(values: pd.Series, q: float) -> float | None:
    """The ``q`` quantile, rounded for display, or None when there are no values."""
    return round(float(values.quantile(q)), 3) if len(values) else None


def _backend(segmind: SegmindResource) -> str:
    """Where the images came from, for people reading the metadata (never the key)."""
    if segmind.uses_emulator:
        return "embedded emulator: SYNTHETIC images, not generated by Segmind"
    return segmind.backend


def _contact_sheet(
    store: ObjectStore, partition: str, completed: pd.DataFrame, synthetic: str
) -> dg.MarkdownMetadataValue:
    """A thumbnail grid of the first completed images, labelled with their prompt ids."""
    # Imported here: Pillow loads only in a run that stores a partition's contact sheet.
    from flux_pipeline.report.contact_sheet import render_contact_sheet

    shown = completed.sort_values("prompt_id").head(CONTACT_SHEET_LIMIT)
    paths = {str(row.prompt_id): store.relpath(str(row.image_uri)) for row in shown.itertuples()}
    images = store.read_many(path for path in paths.values() if path)
    tiles = [(pid, images[path]) for pid, path in paths.items() if path in images]
    sheet = render_contact_sheet(tiles, columns=CONTACT_SHEET_COLUMNS, thumb=CONTACT_SHEET_THUMB)
    return image_markdown(
        sheet, alt=f"{len(tiles)} of {len(completed)} {synthetic}images of {partition}"
    )
