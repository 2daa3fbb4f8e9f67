"""flux-pipeline: synthetic image datasets through Segmind's Fast Flux.1 Schnell API."""

import os

# Arrow's default allocator in the wheels (mimalloc) keeps what one thread's tables freed for
# that thread: with lineage written and prompts read from a build's worker threads, a range
# build's peak RSS grew ~5 MB per partition of 1,000 images (309 against 257 MB at 10k). The
# system allocator gives it back. Arrow reads this once, before its first allocation, so it is
# set here, before anything of the package imports pyarrow; a value already set is kept.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"
