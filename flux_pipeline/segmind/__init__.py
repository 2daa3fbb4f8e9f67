"""Segmind client: the asyncio engine, its settings, its results and its errors."""

from flux_pipeline.segmind.config import EngineConfig, Mode
from flux_pipeline.segmind.engine import SegmindEngine, SubmittedHook
from flux_pipeline.segmind.errors import (
    AuthenticationError,
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
    "InsufficientCredits",
    "Mode",
    "ModelNotFound",
    "SegmindEngine",
    "SegmindError",
    "SubmittedHook",
]
