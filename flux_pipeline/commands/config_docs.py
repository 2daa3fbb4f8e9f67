"""Write ``docs/CONFIGURATION.md``, the configuration reference, from the settings' declarations.

``python -m flux_pipeline.commands.config_docs`` rewrites the page; ``--check`` exits 1 when the
committed page differs from what the declarations give (``tests/test_configuration_page.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flux_pipeline.emulator.settings import EmulatorAddress, EmulatorSettings
from flux_pipeline.segmind.config import EngineConfig, EngineOptions, SegmindSettings
from flux_pipeline.settings.environment import VARIABLES
from flux_pipeline.settings.reference import fields_table, variables_table
from flux_pipeline.store.settings import StoreSettings

#: Where the page lives in the repository.
PAGE = Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md"
ENGINE_ONLY = [name for name in EngineConfig.model_fields if name not in EngineOptions.model_fields]


def render() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the declarations in `flux_pipeline/` by "
        "`python -m flux_pipeline.commands.config_docs`; do not edit by hand. How to add a "
        "setting: the docstring of `flux_pipeline/settings/__init__.py`.",
        "",
        "## `segmind` resource",
        "",
        "Fields of `SegmindResource` (declared in `flux_pipeline/segmind/config.py`, "
        "`SegmindSettings`). Each may be set in code or overridden per run "
        "(`resources: {segmind: {config: {...}}}` in run config, the launchpad, a schedule).",
        "",
        *fields_table(SegmindSettings),
        "",
        "## `storage` resource",
        "",
        "Fields of `ObjectStoreResource` (`flux_pipeline/store/settings.py`).",
        "",
        *fields_table(StoreSettings),
        "",
        "## Engine (`EngineConfig`)",
        "",
        "`EngineConfig` takes every engine field of the `segmind` resource above (all but "
        "`api_key`, `base_url` and `emulator_workers`), plus "
        + ", ".join(f"`{name}`" for name in ENGINE_ONLY)
        + ":",
        "",
        *fields_table(EngineConfig, only=ENGINE_ONLY),
        "",
        "## Emulator (`flux-pipeline emulator`)",
        "",
        "Flags of `flux-pipeline emulator`: the fields of `EmulatorSettings` "
        "(`flux_pipeline/emulator/settings.py`) and where it listens (`EmulatorAddress`).",
        "",
        *fields_table(EmulatorAddress, flags=True),
        *fields_table(EmulatorSettings, flags=True)[2:],
        "",
        "## Environment variables",
        "",
        "Declared in `flux_pipeline/settings/environment.py`. A value that is not a number, or "
        "is past its bound, fails naming the variable when it is read.",
        "",
        *variables_table(VARIABLES),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flux_pipeline.commands.config_docs")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--output", type=Path, default=PAGE, help="default: %(default)s")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != page:
            print(
                f"{args.output} is out of date: run python -m flux_pipeline.commands.config_docs",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
