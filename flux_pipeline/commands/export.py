"""``flux-pipeline export``: WebDataset shards of a partition range, or imagefolder metadata.

Export is run by a person over a range they choose, long after the daily builds, so it is a
command rather than an asset: it derives files from stored partitions and calls no API.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Final

from flux_pipeline.dataset.shard_defaults import (
    DEFAULT_MAX_SAMPLES,
    DEFAULT_MAX_SHARD_BYTES,
    DEFAULT_PREFIX,
    MANIFEST_FILE,
)
from flux_pipeline.settings.environment import FLUX_STORAGE_ROOT

if TYPE_CHECKING:
    from flux_pipeline.store.storage import ObjectStore

_UNITS: Final = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_SIZE: Final = re.compile(r"\s*(\d+)\s*([a-z]*)\s*")


def byte_size(text: str) -> int:
    """``500MB``, ``1GiB``, ``1048576``: a size in bytes (argparse type)."""
    match = _SIZE.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 1GiB, 1048576)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flux-pipeline export webdataset`` and ``flux-pipeline export imagefolder``."""
    parser = subcommands.add_parser(
        "export",
        help="package stored partitions for training (WebDataset shards, imagefolder metadata)",
        description="Derive training datasets from built partitions; no API call is made.",
    )
    formats = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    shards = formats.add_parser(
        "webdataset",
        help="pack COMPLETED images of a partition range into tar shards with a manifest",
        description=(
            "Pack every COMPLETED image of the chosen partitions into WebDataset tar shards "
            "OUT/PREFIX-000000.tar, ... (samples KEY.jpg, KEY.txt with the prompt, KEY.json "
            "with the lineage; KEY is PARTITION/PROMPT_ID-SEED), each image checked against "
            f"its lineage sha256, and write OUT/{MANIFEST_FILE}."
        ),
    )
    shards.add_argument("out", metavar="OUT", help="output folder: a local path or s3://...")
    _add_source(shards)
    shards.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="shard file name prefix (default: %(default)s)"
    )
    shards.add_argument(
        "--max-samples-per-shard",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        metavar="N",
        help="samples per shard at most (default: %(default)s)",
    )
    shards.add_argument(
        "--max-shard-bytes",
        type=byte_size,
        default=DEFAULT_MAX_SHARD_BYTES,
        metavar="SIZE",
        help="shard size at most, e.g. 500MB or 1GiB (default: 1GiB)",
    )
    shards.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="export every row even when its image (same request_key) is already exported",
    )
    shards.set_defaults(handler=_run_webdataset)
    metadata = formats.add_parser(
        "imagefolder",
        help="(re)write each partition's images/partition=KEY/metadata.jsonl from its lineage",
        description=(
            "Builds write metadata.jsonl themselves; this rewrites it for the chosen partitions "
            "with the union of their keys (variant, attributes, each attribute; an empty text "
            "where a row lacks one), so datasets loads a range built by different versions or from "
            "tables with other attributes (datasets needs the same keys in every metadata file)."
        ),
    )
    _add_source(metadata)
    metadata.set_defaults(handler=_run_imagefolder)


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-flagged",
        action="store_true",
        help=(
            "also export blank images and near-duplicates of an image in the export "
            "(left out by default; see docs/QUALITY.md)"
        ),
    )
    parser.add_argument(
        "--include-synthetic",
        action="store_true",
        help=(
            "also export rows no service made: the embedded emulator's synthetic images and rows "
            "that name no backend (written before backends were recorded)"
        ),
    )
    parser.add_argument(
        "--root",
        default=None,
        help="storage root (default: FLUX_STORAGE_ROOT, else ./data)",
    )
    parser.add_argument(
        "--partition",
        "-p",
        action="append",
        default=[],
        dest="partitions",
        metavar="KEY|START...END",
        help="partition or inclusive range (repeatable; default: every built partition)",
    )


def _near_duplicate_bits() -> int:
    from flux_pipeline.quality.limits import QualityLimits

    return QualityLimits.from_env().near_duplicate_bits


def _say_flagged(left_out: dict[str, int], included: bool) -> None:
    """Say what the quality gates left out (or that they were lifted)."""
    if included:
        print("flagged rows included (--include-flagged): blank images and near-duplicates too")
    elif left_out:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(left_out.items()))
        print(f"left out flagged row(s): {counts}; --include-flagged exports them too")


def _source(args: argparse.Namespace) -> tuple[ObjectStore, list[str]]:
    from flux_pipeline.dataset.partitions import select_partitions
    from flux_pipeline.store.storage import ObjectStore

    store = ObjectStore.from_uri(args.root or FLUX_STORAGE_ROOT.read())
    return store, select_partitions(store, args.partitions)


def _run_webdataset(args: argparse.Namespace) -> int:
    from flux_pipeline.dataset.shards import ExportError, ShardInfo, export_shards
    from flux_pipeline.store.storage import ObjectStore

    def show(shard: ShardInfo) -> None:
        print(f"  {shard.name}: {shard.samples} samples, {shard.bytes:,} bytes", flush=True)

    try:
        store, partitions = _source(args)
        out = ObjectStore.from_uri(args.out)
        print(f"exporting {len(partitions)} partition(s) from {store.uri('')} to {out.uri('')}")
        manifest = export_shards(
            store,
            partitions,
            out,
            prefix=args.prefix,
            max_samples_per_shard=args.max_samples_per_shard,
            max_shard_bytes=args.max_shard_bytes,
            keep_duplicates=args.keep_duplicates,
            include_synthetic=args.include_synthetic,
            include_flagged=args.include_flagged,
            near_duplicate_bits=_near_duplicate_bits(),
            on_shard=show,
        )
    except (ValueError, ExportError, OSError) as exc:
        raise SystemExit(f"flux-pipeline export: {exc}") from None
    print(
        f"{manifest.samples} samples in {len(manifest.shards)} shard(s), "
        f"{manifest.bytes:,} bytes; skipped {manifest.duplicates_skipped} duplicate(s) and "
        f"{manifest.failed_skipped} FAILED row(s); manifest {out.uri(MANIFEST_FILE)}"
    )
    _say_synthetic(manifest.synthetic_skipped, args.include_synthetic)
    _say_flagged(manifest.flagged_skipped, args.include_flagged)
    return 0


def _say_synthetic(skipped: int, included: bool) -> None:
    """Say what was done with rows no service made."""
    if included:
        print("synthetic rows included (--include-synthetic): not every image is a service's")
    elif skipped:
        print(
            f"left out {skipped} row(s) no service made (embedded emulator, or no backend "
            "recorded); --include-synthetic exports them too"
        )


def _run_imagefolder(args: argparse.Namespace) -> int:
    from flux_pipeline.dataset.partitions import attribute_union, read_partition_rows
    from flux_pipeline.quality.export_gate import ExportGate
    from flux_pipeline.store.imagefolder import write_imagefolder_metadata
    from flux_pipeline.store.provenance import is_service

    skipped = 0
    try:
        store, partitions = _source(args)
        gate = ExportGate.open(
            store, partitions, _near_duplicate_bits(), include_flagged=args.include_flagged
        )
        # Every file of the range gets the same keys, so datasets loads the range as one.
        names = attribute_union(store, partitions)
        for partition in partitions:
            rows = read_partition_rows(store, partition)
            made = [r for r in rows if args.include_synthetic or is_service(r.backend)]
            skipped += sum(r.status == "COMPLETED" for r in rows if r not in made)
            kept = [r for r in made if gate is None or r.status != "COMPLETED" or gate.keeps(r)]
            uri = write_imagefolder_metadata(store, partition, kept, attributes=names)
            print(uri, flush=True)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"flux-pipeline export: {exc}") from None
    _say_synthetic(skipped, args.include_synthetic)
    _say_flagged(dict(gate.left_out) if gate is not None else {}, args.include_flagged)
    return 0
