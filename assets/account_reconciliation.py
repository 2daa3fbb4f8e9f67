"""`account_reconciliation`: one day of the account's bill against the images kept, and its
daily schedule (the day before; stopped until someone turns it on)."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from flux_pipeline.assets.partitions import daily_partitions
from flux_pipeline.assets.prompt_table import read_prompt_table
from flux_pipeline.assets.segmind_pool import SEGMIND_POOL, paced_for_pool, pool_share
from flux_pipeline.prompts import partition_requests
from flux_pipeline.protocol import GenerationRequest
from flux_pipeline.reconcile import STATES, reconcile
from flux_pipeline.resources.segmind import SegmindResource
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.store.layout import reconciliation_path


class ReconciliationConfig(dg.Config):
    """What a reconciliation run does besides comparing."""

    recover: bool = False
    """Store the paid, unstored images of request keys their partition still asks for."""


@dg.asset(partitions_def=daily_partitions, pool=SEGMIND_POOL, kinds={"parquet"})
def account_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationConfig,
    segmind: SegmindResource,
    storage: ObjectStoreResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """One UTC day of the account's record of requests against the ledgers and lineage under
    the root: `reconciliation/date=DAY/reconciliation.parquet`, one row per request (billed USD,
    key, partition, image, state `stored`/`paid_not_stored`/`stored_not_billed`/`failed`).
    Paced at the `segmind` pool's share; today and yesterday are provisional (the record lags).
    `recover` stores paid images of still-wanted keys; the lineage is never rewritten."""
    day = date.fromisoformat(context.partition_key)
    store = storage.store()
    engine = paced_for_pool(segmind.engine_config(), pool_share(context.instance))
    wanted = None
    if config.recover:
        table = read_prompt_table(store)

        def wanted(partition: str) -> dict[str, GenerationRequest]:
            return {r.request_key: r for r in partition_requests(table, partition)}

    result = reconcile(store, engine, segmind.backend, day, day, wanted=wanted)
    summary = result.summary()
    if summary["provisional_days"]:
        context.log.warning(f"{day} is provisional: the account's record lags")
    metadata: dict[str, object] = {
        "dagster/uri": store.uri(reconciliation_path(day.isoformat())),
        "dagster/row_count": len(result.rows),
        "billed_usd": summary["billed_usd"],
        "unknown_requests": len(summary["unknown_requests"]),
        "recovered": len(summary["recovered"]),
        "record_requests": summary["record_requests"],
        "provisional": bool(summary["provisional_days"]),
    }
    for state in STATES:
        metadata[f"{state}_images"] = summary["states"][state]["images"]
        metadata[f"{state}_usd"] = summary["states"][state]["usd"]
    return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]


account_reconciliation_job = dg.define_asset_job(
    "account_reconciliation_job",
    selection=dg.AssetSelection.assets(account_reconciliation),
    description="Reconcile one day of the account's bill with the images kept.",
)


@dg.schedule(
    job=account_reconciliation_job,
    cron_schedule="30 1 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def account_reconciliation_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Reconciles the day before (UTC), once the record has had a night to settle."""
    when = context.scheduled_execution_time or datetime.now(UTC)
    day = (when.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)
