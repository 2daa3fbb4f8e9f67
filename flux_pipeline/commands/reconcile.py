"""``flux-pipeline reconcile --from DAY --to DAY [--recover]``: the account's record of requests
for the model against the ledgers and lineage under the root, a file per day, and a summary.

The service is the configured one (``SEGMIND_API_KEY``, ``SEGMIND_BASE_URL``); lookups are
paced at ``SEGMIND_REQUESTS_PER_MINUTE`` when set. ``--recover`` fetches the paid images of keys
their partition still asks for (the prompt table stored under the root, else ``FLUX_PROMPTS``).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from typing import Any

from flux_pipeline.commands.plan import load_prompts
from flux_pipeline.settings.environment import (
    FLUX_STORAGE_ROOT,
    SEGMIND_API_KEY,
    SEGMIND_BASE_URL,
    SEGMIND_REQUESTS_PER_MINUTE,
)


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flux-pipeline reconcile``."""
    parser = subcommands.add_parser(
        "reconcile",
        help="reconcile the account's bill with the images kept (a file per day)",
        description=(
            "Compare the account's record of requests (what Segmind billed, day by day in UTC) "
            "with the ledgers and lineage under the root; write "
            "reconciliation/date=DAY/reconciliation.parquet for each day and print the totals "
            "in USD and images per state (stored, paid_not_stored, stored_not_billed, failed). "
            "Today and yesterday are provisional: the record lags."
        ),
    )
    parser.add_argument("--from", dest="first", type=_day, required=True, metavar="DAY")
    parser.add_argument("--to", dest="last", type=_day, required=True, metavar="DAY")
    parser.add_argument(
        "--recover",
        action="store_true",
        help="store the paid, unstored images of keys their partition still asks for",
    )
    parser.add_argument("--root", default=None, help="storage root (default: FLUX_STORAGE_ROOT)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_run)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day YYYY-MM-DD: {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    from flux_pipeline.prompts import partition_requests
    from flux_pipeline.reconcile import days_between, reconcile
    from flux_pipeline.segmind import EngineConfig, SegmindError
    from flux_pipeline.store.provenance import service_backend
    from flux_pipeline.store.storage import ObjectStore

    key, url = SEGMIND_API_KEY.read(), SEGMIND_BASE_URL.read()
    if not key or not url:
        raise SystemExit(
            "flux-pipeline reconcile: set SEGMIND_API_KEY and SEGMIND_BASE_URL: the account's "
            "record is the service's (the embedded emulator keeps none between runs)"
        )
    try:
        days_between(args.first, args.last)
        quota = SEGMIND_REQUESTS_PER_MINUTE.read()
        config = EngineConfig(api_key=key, base_url=url, requests_per_minute=quota)
        root = args.root or FLUX_STORAGE_ROOT.read()
        store = ObjectStore.from_uri(root)
        wanted = None
        if args.recover:
            table, _, _ = load_prompts(store, None)

            def wanted(partition: str) -> dict[str, Any]:
                return {r.request_key: r for r in partition_requests(table, partition)}

        result = reconcile(
            store, config, service_backend(url), args.first, args.last, wanted=wanted
        )
    except (ValueError, OSError, SegmindError) as exc:
        raise SystemExit(f"flux-pipeline reconcile: {exc}") from None
    summary = result.summary()
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


def render(summary: dict[str, Any]) -> str:
    """The summary as text: images and USD per state, then the requests no ledger knows."""
    lines = [f"reconciled {summary['from']} .. {summary['to']} (UTC days of the record)", ""]
    lines.append(f"{'state':<18} {'images':>7} {'USD':>12}")
    for state, total in summary["states"].items():
        lines.append(f"{state:<18} {total['images']:>7} {total['usd']:>12.6f}")
    lines.append(f"{'billed':<18} {'':>7} {summary['billed_usd']:>12.6f}")
    unknown = summary["unknown_requests"]
    if unknown:
        lines += [
            "",
            f"{len(unknown)} request(s) no ledger under this root knows "
            "(other runs or tools on the account):",
            *(f"  {i}" for i in unknown),
        ]
    if summary["recovered"]:
        lines += ["", f"recovered {len(summary['recovered'])} paid image(s) into their partition"]
    if summary["provisional_days"]:
        lines += ["", "provisional (the record lags): " + ", ".join(summary["provisional_days"])]
    return "\n".join(lines)
