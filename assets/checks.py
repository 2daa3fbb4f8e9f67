"""Asset checks on each ``generated_images`` partition (partitioned like the asset itself).

A run may build a range of partitions (a backfill run): every check then evaluates each
partition of the range and records one result per partition, tied to that partition's latest
materialization, exactly as a one-partition run records its one result.
"""

import hashlib
import math
import numbers
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg

from flux_pipeline.assets.dagster_internals import latest_materialization_target
from flux_pipeline.assets.generated_images import generated_images
from flux_pipeline.assets.partition_lineage import read_lineage_schema, read_partition_lineage
from flux_pipeline.assets.partitions import daily_partitions
from flux_pipeline.assets.prompt_table import read_prompt_table
from flux_pipeline.quality.limits import QualityLimits
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.settings.environment import FLUX_MAX_FAILURE_RATE
from flux_pipeline.store.layout import lineage_path
from flux_pipeline.store.lineage import LINEAGE_SCHEMA
from flux_pipeline.store.receipts import verified_by_receipts
from flux_pipeline.store.storage import ObjectStore

DEFAULT_MAX_FAILURE_RATE = FLUX_MAX_FAILURE_RATE.default
#: Prompt ids listed in a failed check's metadata (the count is always complete).
LISTED = 20
#: Images read at once by the integrity check (concurrently on S3; bounds memory).
READ_BATCH = 32

PartitionCheck = Callable[[ObjectStore, str], dg.AssetCheckResult]


def _partitioned_check(check: PartitionCheck) -> dg.AssetChecksDefinition:
    """A check on ``generated_images`` evaluated for every partition of its run.

    Dagster 1.13 gives a check step of a range run no partition of its own (an
    ``AssetCheckResult`` there is recorded without one), so each partition's result is yielded
    as an ``AssetCheckEvaluation`` naming its partition and the materialization it checked.
    Partitioned checks are a preview feature of Dagster 1.13 (``partitions_def`` on a check);
    its one-time PreviewWarning is silenced here rather than printed on every load.
    """
    name = check.__name__

    def evaluate(
        context: dg.AssetCheckExecutionContext, storage: ObjectStoreResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output[None]]:
        store = storage.store()
        for partition in context.partition_keys:
            result = check(store, partition)
            yield dg.AssetCheckEvaluation(
                asset_key=generated_images.key,
                check_name=name,
                passed=result.passed,
                metadata=result.metadata,
                target_materialization_data=latest_materialization_target(
                    context.instance, generated_images.key, partition
                ),
                severity=result.severity,
                description=result.description,
                blocking=False,
                partition=partition,
            )
        yield dg.Output(None)  # the check step's own output, which Dagster requires

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        decorate = dg.asset_check(
            asset=generated_images,
            name=name,
            description=check.__doc__,
            partitions_def=daily_partitions,
        )
        # Dagster executes generator checks; its annotation only names AssetCheckResult.
        return decorate(evaluate)  # type: ignore[arg-type]


def _missing_lineage(partition: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, description=f"partition {partition} has no lineage: materialize it first"
    )


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:LISTED])
    return shown + (f" (+{len(ids) - LISTED} more)" if len(ids) > LISTED else "")


@_partitioned_check
def one_row_per_prompt(store: ObjectStore, partition: str) -> dg.AssetCheckResult:
    """The partition's lineage holds exactly one row per prompt and variant of the stored table
    (a row with `variants` 3 has variants 0, 1 and 2)."""
    lineage = read_partition_lineage(store, partition, columns=["prompt_id", "variant"])
    if lineage is None:
        return _missing_lineage(partition)
    table = read_prompt_table(store)
    expected = {
        _image(str(prompt_id), variant)
        for prompt_id, variants in zip(table["prompt_id"], table["variants"], strict=True)
        for variant in range(int(variants))
    }
    found = [
        _image(str(p), int(v))
        for p, v in zip(lineage["prompt_id"], lineage["variant"], strict=True)
    ]
    counts = Counter(found)
    missing = sorted(expected - set(counts))
    unexpected = sorted(set(counts) - expected)
    duplicated = sorted(key for key, n in counts.items() if n > 1)
    problems = {"missing": missing, "unexpected": unexpected, "duplicated": duplicated}
    return dg.AssetCheckResult(
        passed=not (missing or unexpected or duplicated),
        metadata={
            "prompts": len(table),
            "images": len(expected),
            "lineage_rows": len(lineage),
            **{name: _ids(ids) for name, ids in problems.items() if ids},
        },
    )


def _image(prompt_id: str, variant: int) -> str:
    """How an image is named in a check's metadata: the prompt id, ``#v`` for variant v > 0."""
    return prompt_id if variant == 0 else f"{prompt_id}#{variant}"


@_partitioned_check
def images_match_sha256(store: ObjectStore, partition: str) -> dg.AssetCheckResult:
    """Every COMPLETED image exists in storage and its sha256 equals `image_sha256`."""
    columns = ["prompt_id", "status", "image_uri", "image_sha256", "image_bytes"]
    lineage = read_partition_lineage(store, partition, columns=columns)
    if lineage is None:
        return _missing_lineage(partition)
    completed = lineage[lineage["status"] == "COMPLETED"]
    rows = [(row, store.relpath(str(row.image_uri))) for row in completed.itertuples()]
    # Objects still the version a build wrote and hashed need no read (store/receipts.py).
    verified = verified_by_receipts(
        store,
        partition,
        ((path, str(row.image_sha256), _size(row.image_bytes)) for row, path in rows if path),
    )
    to_read = [(row, path) for row, path in rows if path not in verified]
    missing: list[str] = []
    altered: list[str] = []
    for start in range(0, len(to_read), READ_BATCH):
        batch = to_read[start : start + READ_BATCH]
        found = store.read_many(path for _, path in batch if path is not None)
        for row, path in batch:
            if path is None or path not in found:
                missing.append(str(row.prompt_id))
            elif hashlib.sha256(found[path]).hexdigest() != row.image_sha256:
                altered.append(str(row.prompt_id))
    metadata: dict[str, Any] = {
        "images_verified": len(completed) - len(missing) - len(altered),
        "images_read_back": len(to_read),
    }
    if missing:
        metadata["missing"] = _ids(sorted(missing))
    if altered:
        metadata["sha256_mismatch"] = _ids(sorted(altered))
    return dg.AssetCheckResult(passed=not (missing or altered), metadata=metadata)


def _size(value: object) -> int:
    """A lineage ``image_bytes`` as an int; -1 (matching no object) when null."""
    if isinstance(value, numbers.Real) and not math.isnan(value):
        return int(float(value))
    return -1


@_partitioned_check
def failure_rate_below_threshold(store: ObjectStore, partition: str) -> dg.AssetCheckResult:
    """The share of FAILED images stays at or under `FLUX_MAX_FAILURE_RATE` (default 0.05)."""
    lineage = read_partition_lineage(store, partition, columns=["status", "error"])
    if lineage is None:
        return _missing_lineage(partition)
    threshold = FLUX_MAX_FAILURE_RATE.read()
    failed = lineage[lineage["status"] == "FAILED"]
    rate = len(failed) / len(lineage) if len(lineage) else 0.0
    metadata: dict[str, Any] = {
        "failure_rate": round(rate, 4),
        "threshold": threshold,
        "failed": len(failed),
    }
    if len(failed):
        errors = failed["error"].fillna("").astype(str).value_counts().head(5)
        metadata["top_errors"] = dg.MetadataValue.json({str(k): int(v) for k, v in errors.items()})
    return dg.AssetCheckResult(
        passed=rate <= threshold, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


@_partitioned_check
def images_pass_quality(store: ObjectStore, partition: str) -> dg.AssetCheckResult:
    """The share of blank images among COMPLETED rows stays at or under `FLUX_MAX_FLAGGED_RATE`
    (default 0.05); flagged rows stay COMPLETED and are left out of exports."""
    lineage = read_partition_lineage(store, partition, columns=["prompt_id", "status", "blank"])
    if lineage is None:
        return _missing_lineage(partition)
    threshold = QualityLimits.from_env().max_flagged_rate
    completed = lineage[lineage["status"] == "COMPLETED"]
    blank = completed[completed["blank"].astype("boolean").fillna(False)]
    unknown = int(completed["blank"].isna().sum())
    share = len(blank) / len(completed) if len(completed) else 0.0
    metadata: dict[str, Any] = {
        "blank_share": round(share, 4),
        "threshold": threshold,
        "blank": len(blank),
        "completed": len(completed),
    }
    if len(blank):
        metadata["blank_prompt_ids"] = _ids(sorted(blank["prompt_id"].astype(str)))
    if unknown:  # built before the quality columns: its next rebuild computes them
        metadata["without_quality_columns"] = unknown
    return dg.AssetCheckResult(
        passed=share <= threshold, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


@_partitioned_check
def lineage_schema_as_declared(store: ObjectStore, partition: str) -> dg.AssetCheckResult:
    """The stored lineage file has exactly the declared columns and types (`partition` comes
    from the Hive folder, not the file)."""
    path = lineage_path(partition)
    if not store.exists(path):
        return _missing_lineage(partition)
    stored = read_lineage_schema(store, partition)
    found = {field.name: f"{field.type}{'' if field.nullable else ' not null'}" for field in stored}
    declared = {
        field.name: f"{field.type}{'' if field.nullable else ' not null'}"
        for field in LINEAGE_SCHEMA
    }
    differences = {
        name: f"declared {declared.get(name, 'absent')}, found {found.get(name, 'absent')}"
        for name in sorted(declared.keys() | found.keys())
        if declared.get(name) != found.get(name)
    }
    return dg.AssetCheckResult(
        passed=not differences,
        metadata={
            "columns": len(found),
            **({"differences": dg.MetadataValue.json(differences)} if differences else {}),
        },
    )


generated_images_checks = [
    one_row_per_prompt,
    images_match_sha256,
    failure_rate_below_threshold,
    images_pass_quality,
    lineage_schema_as_declared,
]
