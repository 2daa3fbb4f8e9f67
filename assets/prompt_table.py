"""`prompt_table`: the validated prompt table, stored as Parquet for the builds downstream."""

import hashlib

import dagster as dg
import pandas as pd

from flux_pipeline.assets.metadata import frame_schema, preview_table
from flux_pipeline.prompts import (
    COLUMNS,
    PromptTableError,
    attribute_names,
    load_prompt_table,
    prompt_table_parquet,
)
from flux_pipeline.resources.storage import ObjectStoreResource
from flux_pipeline.settings.environment import FLUX_PROMPTS
from flux_pipeline.store.layout import PROMPT_TABLE_PATH
from flux_pipeline.store.storage import ObjectStore

#: Rows shown in the metadata preview.
PREVIEW_ROWS = 10
SEED_RULE = "derived from (prompt_id, partition) in each partition"
#: One line per column of the validated table.
PROMPT_DESCRIPTIONS = {
    "prompt_id": "unique id; names the image files",
    "prompt": "text prompt",
    "seed": f"pinned seed; empty = {SEED_RULE}",
    "steps": "inference steps (1-8)",
    "aspect_ratio": "aspect ratio, e.g. 16:9",
    "variants": "images of the row (1-64); variant v > 0 takes the pinned seed + v, or a seed "
    "derived from (prompt_id, partition, v)",
}
ATTRIBUTE_DESCRIPTION = "attribute (label) of the row: text, null when absent"


@dg.asset(kinds={"parquet"})
def prompt_table(
    context: dg.AssetExecutionContext, storage: ObjectStoreResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The prompt table or YAML prompt grid named by `FLUX_PROMPTS` (or the bundled sample),
    validated, expanded and rendered (docs/DATASETS.md); every bad row is reported by id and
    field before any credit is spent. Written to `prompt_table/prompt_table.parquet`; its data
    version is the sha256 of the validated content, so an unchanged table keeps partitions in
    sync."""
    source = FLUX_PROMPTS.read()
    context.log.info(f"loading prompt table from {source or 'the bundled sample'}")
    try:
        table = load_prompt_table(source)
    except PromptTableError as err:
        raise dg.Failure(
            description=str(err),
            metadata={"problems": _problems_table(err)},
            allow_retries=False,
        ) from err
    store = storage.store()
    store.write_atomic(PROMPT_TABLE_PATH, prompt_table_parquet(table))
    pinned = int(table["seed"].notna().sum())
    names = attribute_names(table)
    descriptions = {**PROMPT_DESCRIPTIONS, **dict.fromkeys(names, ATTRIBUTE_DESCRIPTION)}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "dagster/column_schema": frame_schema(table, descriptions),
            "images_per_partition": int(table["variants"].sum()),
            "attributes": ", ".join(names) or "none",
            "dagster/uri": store.uri(PROMPT_TABLE_PATH),
            "source": source or "bundled sample",
            # An empty `seed` is derived from `(prompt_id, partition)` in each partition, so the
            # preview shows it blank.
            "seeds": f"{pinned} pinned, {len(table) - pinned} {SEED_RULE}",
            "preview_rows": f"first {min(PREVIEW_ROWS, len(table))} of {len(table)}",
            "preview": preview_table(table, rows=PREVIEW_ROWS, descriptions=descriptions),
        },
        data_version=table_version(table),
    )


def table_version(table: pd.DataFrame) -> dg.DataVersion:
    """The sha256 of the validated table's content (columns, rows in order, nulls as null).

    ``variants`` counts only when a row asks for more than one image, so a table without the
    new columns keeps the version it had before they existed (its partitions stay in sync)."""
    if not attribute_names(table) and (table["variants"] == 1).all():
        table = table[list(COLUMNS)]
    canonical = table.to_json(orient="split", index=False, force_ascii=False)
    return dg.DataVersion(hashlib.sha256(canonical.encode()).hexdigest())


def _problems_table(err: PromptTableError) -> dg.TableMetadataValue:
    """Every problem of the table as rows (row, prompt_id, field, message) for the UI."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "row": problem.row,
                    "prompt_id": problem.prompt_id,
                    "field": problem.field,
                    "message": problem.message,
                }
            )
            for problem in err.problems
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("row", "int"),
                dg.TableColumn("prompt_id", "string"),
                dg.TableColumn("field", "string"),
                dg.TableColumn("message", "string"),
            ]
        ),
    )


def read_prompt_table(store: ObjectStore) -> pd.DataFrame:
    """The table stored by the ``prompt_table`` asset; fails clearly if it was never built."""
    if not store.exists(PROMPT_TABLE_PATH):
        raise dg.Failure(
            description=(
                f"{store.uri(PROMPT_TABLE_PATH)} does not exist: materialize prompt_table first"
            ),
            allow_retries=False,
        )
    return load_prompt_table(store.uri(PROMPT_TABLE_PATH))
