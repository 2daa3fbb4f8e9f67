"""``flux-pipeline prompts expand FILE -o TABLE.parquet``: a grid (or table) as the validated
table a build would use, written so that it can be read, reviewed and versioned."""

from __future__ import annotations

import argparse


def add_parser(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flux-pipeline prompts expand``."""
    parser = subcommands.add_parser(
        "prompts",
        help="work with prompt tables and grids (no API call)",
        description="Prompt tables and YAML prompt grids; nothing is generated.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    expand = actions.add_parser(
        "expand",
        help="expand a YAML grid (or validate a table) into a Parquet prompt table",
        description=(
            "Read FILE (a YAML prompt grid, or a CSV/Parquet table) as FLUX_PROMPTS would be "
            "read: validate it whole, expand every template, render every prompt; write the "
            "result as Parquet. Used as FLUX_PROMPTS, the output makes the same requests and "
            "has the same data version as FILE; its prompts are not rendered again."
        ),
    )
    expand.add_argument("file", metavar="FILE", help="grid (.yaml/.yml) or table: path or URI")
    expand.add_argument(
        "-o", "--output", required=True, metavar="TABLE.parquet", help="where to write it"
    )
    expand.set_defaults(handler=_run_expand)


def _run_expand(args: argparse.Namespace) -> int:
    import fsspec

    from flux_pipeline.prompts import PromptTableError, load_prompt_table, prompt_table_parquet

    try:
        table = load_prompt_table(args.file)
    except PromptTableError as exc:
        raise SystemExit(f"flux-pipeline prompts expand: {exc}") from None
    try:
        with fsspec.open(args.output, "wb") as f:
            f.write(prompt_table_parquet(table))
    except OSError as exc:
        raise SystemExit(
            f"flux-pipeline prompts expand: cannot write {args.output}: {exc}"
        ) from None
    images = int(table["variants"].sum())
    print(f"{len(table)} prompt(s), {images} image(s) a partition -> {args.output}")
    return 0
