"""The ``flux-pipeline`` console command: one argparse subcommand per tool."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from flux_pipeline import native_memory, protocol
from flux_pipeline.commands import demo, export, plan, prompts, reconcile
from flux_pipeline.emulator.settings import EmulatorAddress, EmulatorSettings
from flux_pipeline.settings.flags import add_flags, from_flags

Handler = Callable[[argparse.Namespace], int]


def _add_emulator(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "emulator",
        help="serve a local Segmind-compatible API (synthetic images)",
        description=(
            f"Serve Segmind's wire protocol for {protocol.MODEL} on HOST:PORT, rendering "
            "deterministic synthetic images. Point SEGMIND_BASE_URL at it."
        ),
    )
    add_flags(parser, EmulatorAddress)
    add_flags(parser, EmulatorSettings)
    parser.set_defaults(handler=_run_emulator)


def emulator_settings(args: argparse.Namespace) -> EmulatorSettings:
    """The settings named by the ``emulator`` subcommand's arguments (SystemExit if invalid)."""
    try:
        return from_flags(EmulatorSettings, args)
    except ValueError as exc:
        raise SystemExit(f"flux-pipeline emulator: {exc}") from None


def _run_emulator(args: argparse.Namespace) -> int:
    from flux_pipeline.emulator import serve

    settings = emulator_settings(args)
    accepted = f"{len(settings.api_keys)} configured key(s)" if settings.api_keys else "any key"
    where = f"http://{args.host}:{args.port}" if args.port else f"{args.host}, a free port"
    quota = (
        f"; quota {settings.quota_per_minute} requests ({settings.quota_counts})"
        f" per {settings.quota_window:g} s per key"
        if settings.quota_per_minute
        else ""
    )
    print(
        f"Segmind emulator for {protocol.MODEL} serving SYNTHETIC images on {where};"
        f" accepting {accepted}; {settings.workers} workers x {settings.step_time}s/step{quota}",
        flush=True,
    )
    serve(settings, args.host, args.port)
    return 0


#: Each entry adds one subcommand; its parser sets ``handler``.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_emulator,
    demo.add_parser,
    export.add_parser,
    plan.add_parser,
    prompts.add_parser,
    reconcile.add_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flux-pipeline",
        description="Synthetic image datasets through Segmind's Fast Flux API.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    native_memory.tune()  # the process is ours: before any command imports pyarrow
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
