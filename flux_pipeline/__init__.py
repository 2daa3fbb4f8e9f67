"""flux-pipeline: synthetic image datasets through Segmind's Fast Flux.1 Schnell API.

Importing the package or any of its stages changes nothing in the process: entry points tune
native memory themselves (:mod:`flux_pipeline.native_memory`).
"""

__version__ = "0.1.0"
