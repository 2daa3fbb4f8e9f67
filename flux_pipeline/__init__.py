"""flux-pipeline: synthetic image datasets through Segmind's Fast Flux.1 Schnell API."""

from flux_pipeline import native_memory

# Before anything of the package imports pyarrow or starts a thread (see the module).
native_memory.configure()

__version__ = "0.1.0"
