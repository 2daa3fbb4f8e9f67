"""Run every ``bench/bench_*.py`` module's ``main()`` in turn, or only those named.

python -m bench                 # all of them
python -m bench emulator        # bench/bench_emulator.py only
python -m bench quota           # bench/bench_quota.py: images/min under a per-minute quota
python -m bench backfill        # bench/bench_backfill.py: a dagster-daemon asset backfill
python -m bench recovery        # bench/bench_recovery.py: a backfill killed mid-build, restarted
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path

from flux_pipeline import native_memory

PREFIX = "bench_"


def available() -> list[str]:
    """Names of the benchmark modules next to this file, sorted."""
    here = [str(Path(__file__).parent)]
    return sorted(info.name for info in pkgutil.iter_modules(here) if info.name.startswith(PREFIX))


def main(argv: Sequence[str] | None = None) -> int:
    modules = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(modules)})"
    )
    args = parser.parse_args(argv)
    native_memory.tune()  # as the shipped entry points do, before a benchmark imports pyarrow
    chosen = [name if name.startswith(PREFIX) else PREFIX + name for name in args.names] or modules
    unknown = sorted(set(chosen) - set(modules))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(modules)}")
    for name in chosen:
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
