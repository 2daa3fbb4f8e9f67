"""flux-pipeline: synthetic image datasets through Segmind's Fast Flux.1 Schnell API."""

__version__ = "0.1.0"
