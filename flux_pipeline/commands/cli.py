"""The ``flux-pipeline`` console command: one argparse subcommand per tool."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from flux_pipeline import protocol
from flux_pipeline.commands import demo, export, plan

if TYPE_CHECKING:
    from flux_pipeline.emulator import EmulatorSettings

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
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accepted x-api-key (repeatable); none given: any non-empty key is accepted",
    )
    parser.add_argument(
        "--workers", type=int, default=4, help="concurrent inference slots (default: %(default)s)"
    )
    parser.add_argument(
        "--step-time",
        type=float,
        default=0.3,
        help="seconds per inference step (default: %(default)s)",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability of answering any request 500/502/504 (default: %(default)s)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send each API answer a seeded random 0..SECONDS late (default: %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=3600.0,
        help="seconds results stay available after submission (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of faults, latency and jitter (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help=(
            "requests per second per key, a token bucket over every API request with a"
            " one-second burst; applies alongside --quota-per-minute (default: unlimited)"
        ),
    )
    parser.add_argument(
        "--quota-per-minute",
        type=int,
        default=None,
        metavar="Q",
        help=(
            "account quota: API requests per key in any sliding minute; past it 429 with"
            " Retry-After and x-rate-limit-reset-at-utc (default: none)"
        ),
    )
    parser.add_argument(
        "--quota-counts",
        choices=("all", "submits"),
        default="all",
        help=(
            "what the quota counts: all API requests (submit, status, result, v1 POST) or"
            " only submits and v1 POSTs (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--quota-window",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help=(
            "length of the quota's 'minute': time scaling for tests and benchmarks"
            " (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--credits",
        type=float,
        default=None,
        help="credit balance per key, one per job (default: unlimited)",
    )
    parser.add_argument(
        "--output-format",
        choices=("jpeg", "png"),
        default="jpeg",
        help="image encoding (default: %(default)s)",
    )
    parser.add_argument(
        "--bad-media",
        choices=("oversized", "truncated", "html"),
        default=None,
        help=(
            "serve bad image bodies: oversized (a PNG header then padding, streamed without"
            " Content-Length), truncated (a PNG/JPEG cut in half), html (an error page)"
        ),
    )
    parser.add_argument(
        "--bad-media-rate",
        type=float,
        default=1.0,
        metavar="P",
        help="share of image answers that are bad, seeded (default: %(default)s)",
    )
    parser.add_argument(
        "--oversized-bytes",
        type=int,
        default=400 * 1024 * 1024,
        metavar="N",
        help="bytes of an oversized body (default: %(default)s)",
    )
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="status and result bodies without metrics (queue_time, inference_time, cost)",
    )
    parser.add_argument(
        "--v2-only",
        action="store_true",
        help="no sync endpoint: every v1 POST is answered 404",
    )
    parser.add_argument(
        "--status-origin",
        default=None,
        metavar="URL",
        help="origin named in status_url/response_url instead of the emulator's own",
    )
    parser.set_defaults(handler=_run_emulator)


def emulator_settings(args: argparse.Namespace) -> EmulatorSettings:
    """The settings named by the ``emulator`` subcommand's arguments (SystemExit if invalid)."""
    from flux_pipeline.emulator import EmulatorSettings

    try:
        return EmulatorSettings(
            api_keys=tuple(args.api_keys),
            workers=args.workers,
            step_time=args.step_time,
            fault_rate=args.fault_rate,
            latency=args.latency,
            retention=args.retention,
            seed=args.seed,
            rate_limit=args.rate_limit,
            quota_per_minute=args.quota_per_minute,
            quota_counts=args.quota_counts,
            quota_window=args.quota_window,
            credits=args.credits,
            output_format=args.output_format,
            bad_media=args.bad_media,
            bad_media_rate=args.bad_media_rate,
            oversized_bytes=args.oversized_bytes,
            metrics=args.metrics,
            v2_only=args.v2_only,
            status_origin=args.status_origin,
        )
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
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
