"""Segmind client: the asyncio engine, its settings and results, and a sync facade."""

from flux_pipeline.segmind.client import Job, SegmindClient
from flux_pipeline.segmind.config import EngineConfig, Mode
from flux_pipeline.segmind.engine import SegmindEngine, SubmittedHook
from flux_pipeline.segmind.errors import (
    AuthenticationError,
    InferenceFailed,
    InferenceTimeout,
    InsufficientCredits,
    ModelNotFound,
    SegmindError,
)
from flux_pipeline.segmind.results import GenerationResult
from flux_pipeline.segmind.stats import EngineStats

__all__ = [
    "AuthenticationError",
    "EngineConfig",
    "EngineStats",
    "GenerationResult",
    "InferenceFailed",
    "InferenceTimeout",
    "InsufficientCredits",
    "Job",
    "Mode",
    "ModelNotFound",
    "SegmindClient",
    "SegmindEngine",
    "SegmindError",
    "SubmittedHook",
]
