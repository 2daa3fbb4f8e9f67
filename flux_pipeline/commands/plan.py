"""``flux-pipeline plan``: what a build of some partitions will reuse, re-attach, submit and
cost, read from storage alone (no API call, nothing written).

Partitions: one ``--partition KEY``, a ``--partition-range START...END`` (both included, the
syntax of ``dagster asset materialize``), or the partitions of ``generated_images`` a Dagster
backfill targets (``--backfill ID``, read from the instance in ``DAGSTER_HOME``; only this
option imports Dagster, lazily, through :mod:`flux_pipeline.assets.backfill_partitions`).

Prompts: ``--prompts``, else the validated table the ``prompt_table`` asset stored under the
root (what ``generated_images`` builds from), else ``FLUX_PROMPTS``, else the bundled sample.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import date, timedelta
from typing import TYPE_CHECKING, Final

from flux_pipeline.settings.environment import (
    FLUX_PROMPTS,
    FLUX_STORAGE_ROOT,
    SEGMIND_API_KEY,
    SEGMIND_BASE_URL,
)

if TYPE_CHECKING:
    import pandas as pd

    from flux_pipeline.builder.cost import CostPlan, PartitionCost
    from flux_pipeline.store.storage import ObjectStore

#: ``START...END``, as Dagster's CLI writes a partition range.
RANGE_SEPARATOR: Final = "..."
_HEADERS: Final = (
    "partition",
    "images",
    "reusable",
    "failed",
    "in flight",
    "to submit",
    "shared",
    "est. cost",
)


class PlanError(ValueError):
    """Input the plan cannot use: the message names it."""


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flux-pipeline plan``."""
    parser = subcommands.add_parser(
        "plan",
        help="show what building partitions will reuse, submit and cost (no API call)",
        description=(
            "For each partition: the images it asks for (one per prompt and variant), those "
            "already stored (reused), the jobs in flight (re-attached, not paid again), the "
            "images to submit (new, billed) and their estimated cost. Reads storage only: no "
            "API call, nothing written."
        ),
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--partition", metavar="KEY", help="one daily partition YYYY-MM-DD")
    which.add_argument(
        "--partition-range",
        metavar="START...END",
        help="daily partitions START to END, both included (as dagster's CLI writes it)",
    )
    which.add_argument(
        "--backfill",
        metavar="ID",
        help="the partitions of generated_images a Dagster backfill targets (needs DAGSTER_HOME)",
    )
    parser.add_argument(
        "--prompts",
        metavar="URI",
        help=(
            "prompt table (CSV/Parquet) or grid (YAML): path or fsspec URI; default: the "
            "table prompt_table stored under the root (prompt_table/prompt_table.parquet), "
            "else FLUX_PROMPTS, else the bundled sample"
        ),
    )
    parser.add_argument(
        "--root", help="storage root (default: FLUX_STORAGE_ROOT, else ./data)", default=None
    )
    parser.add_argument(
        "--price-per-image",
        type=_price,
        default=None,
        metavar="PRICE",
        help="cost of one image, used when the lineage reports no cost yet",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(handler=_run_plan)


def daily_keys(spec: str) -> list[str]:
    """The daily keys of ``KEY`` or ``START...END`` (inclusive), checked as ``YYYY-MM-DD``."""
    if RANGE_SEPARATOR not in spec:
        return [_day(spec).isoformat()]
    start, end = spec.split(RANGE_SEPARATOR, 1)
    if not start or not end or RANGE_SEPARATOR in end:
        raise PlanError(
            f"partition range {spec!r}: write START...END, e.g. 2026-01-01...2026-01-31"
        )
    first, last = _day(start), _day(end)
    if first > last:
        raise PlanError(f"partition range {spec!r}: START is after END")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def load_prompts(store: ObjectStore, prompts: str | None) -> tuple[pd.DataFrame, str, list[str]]:
    """The prompt table to plan with, where it came from, and notes for the reader."""
    from flux_pipeline.prompts import load_prompt_table
    from flux_pipeline.store.layout import PROMPT_TABLE_PATH

    if prompts:
        return load_prompt_table(prompts), prompts, []
    named = FLUX_PROMPTS.read()
    if store.exists(PROMPT_TABLE_PATH):
        stored_uri = store.uri(PROMPT_TABLE_PATH)
        table = load_prompt_table(stored_uri)
        notes = []
        if named is not None and not load_prompt_table(named).equals(table):
            notes.append(
                "FLUX_PROMPTS names a table that differs from the stored one: a run that "
                "materializes prompt_table first builds from it (plan it with --prompts)"
            )
        return table, f"{stored_uri} (stored by prompt_table)", notes
    source = named or "bundled sample"
    notes = [f"no {PROMPT_TABLE_PATH} under the root yet: planned with {source}"]
    return load_prompt_table(named), source, notes


def render(plan: CostPlan, *, where: dict[str, str], notes: list[str]) -> str:
    """The plan as a text table with its totals and footnotes; ``where`` names the root,
    the backend and the prompt table."""
    rows = [_cells(p) for p in (*plan.partitions, plan.total)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_HEADERS)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "  ".join("-" * w for w in widths)
    total = plan.total
    lines = [
        *(f"{name + ':':<8} {value}" for name, value in where.items()),
        f"cost:    {plan.unit.describe()}",
        "",
        line(_HEADERS),
        rule,
        *(line(r) for r in rows[:-1]),
        rule,
        line(rows[-1]),
        "",
        f"{total.to_submit} new image(s) to submit, estimated cost {_money(total.estimated_cost)};",
        f"{total.in_flight} job(s) in flight to re-attach; {total.reusable} stored image(s) "
        "reused. No API call was made.",
        "",
        "in flight and to submit count jobs (images of a partition with the same request key",
        "  share one); the other columns count images (lineage rows: one per prompt and",
        "  variant, so a prompt with variants 3 counts 3).",
        "in flight: jobs already submitted (and billed) by an earlier run: re-attached, not paid",
        "  again. failed: a final FAILED already recorded, reused as is (no API call).",
        "reusable: images this backend made, stored with their recorded sha256; images of",
        "  another backend (the embedded emulator's included) are never reused: to submit.",
        "shared: images whose request key an earlier partition of this range submits or",
        "  re-attaches; one engine sends a key once, so it is counted and paid once, in the",
        "  first partition that needs it.",
        "A budget (max_new_images / max_cost on the segmind resource) caps the new images of a",
        "  run; what it leaves stays to submit, and the next run continues from there.",
        *(f"note: {n}" for n in [*_expired_note(plan), *notes]),
    ]
    return "\n".join(lines)


def _expired_note(plan: CostPlan) -> list[str]:
    expired = plan.total.in_flight_expired
    if not expired:
        return []
    unit = plan.unit.value
    extra = "" if unit is None else f" (up to {_money(expired * unit)} more)"
    return [
        f"{expired} job(s) in flight were submitted over an hour ago; the service keeps results "
        f"for an hour, so they will likely be submitted, and paid, again{extra}"
    ]


def _cells(cost: PartitionCost) -> tuple[str, ...]:
    counts = (cost.images, cost.reusable, cost.failed, cost.in_flight, cost.to_submit, cost.shared)
    return (cost.partition, *(str(c) for c in counts), _money(cost.estimated_cost))


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def _day(key: str) -> date:
    try:
        day = date.fromisoformat(key)
    except ValueError:
        day = None
    if day is None or day.isoformat() != key:
        raise PlanError(f"partition key {key!r}: not a daily key YYYY-MM-DD")
    return day


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _partitions(args: argparse.Namespace) -> list[str]:
    if args.backfill is None:
        return daily_keys(args.partition or args.partition_range)
    from flux_pipeline.assets.backfill_partitions import backfill_partitions

    return backfill_partitions(args.backfill)


def _run_plan(args: argparse.Namespace) -> int:
    from flux_pipeline.builder.cost import plan_cost
    from flux_pipeline.prompts import partition_requests
    from flux_pipeline.store.provenance import configured_backend
    from flux_pipeline.store.storage import ObjectStore

    try:
        partitions = _partitions(args)
        root = args.root or FLUX_STORAGE_ROOT.read()
        store = ObjectStore.from_uri(root, create=False)  # a plan writes nothing
        table, source, notes = load_prompts(store, args.prompts)
        requests = {key: partition_requests(table, key) for key in partitions}
        backend = configured_backend(SEGMIND_API_KEY.read(), SEGMIND_BASE_URL.read())
        plan = plan_cost(store, requests, backend=backend, price_per_image=args.price_per_image)
    except (ValueError, LookupError, OSError) as exc:
        raise SystemExit(f"flux-pipeline plan: {exc}") from None
    where = {"root": store.uri(""), "backend": backend, "prompts": source}
    if args.json:
        print(json.dumps({**where, **plan.to_json(), "notes": notes}, indent=2))
    else:
        print(render(plan, where=where, notes=notes))
    return 0
