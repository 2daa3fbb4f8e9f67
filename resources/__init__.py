"""Dagster resources: the object store and the Segmind engine (one re-export per line)."""

from flux_pipeline.resources.segmind import SegmindResource as SegmindResource
from flux_pipeline.resources.storage import ObjectStoreResource as ObjectStoreResource
