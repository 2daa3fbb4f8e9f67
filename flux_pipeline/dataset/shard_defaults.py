"""Names and limits of WebDataset exports (a light module: the CLI parser reads it)."""

from typing import Final

MANIFEST_FILE: Final = "manifest.json"
DEFAULT_PREFIX: Final = "shard"
#: img2dataset's default; about 1-2 GB of Flux JPEGs, so the byte limit usually closes first.
DEFAULT_MAX_SAMPLES: Final = 10_000
#: 1 GiB: large enough for sequential reads, small enough to spread over workers.
DEFAULT_MAX_SHARD_BYTES: Final = 1 << 30
