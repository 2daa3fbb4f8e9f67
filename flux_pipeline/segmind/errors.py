"""One exception hierarchy for everything the Segmind client can raise."""

from __future__ import annotations


class SegmindError(Exception):
    """Base of every error raised by :mod:`flux_pipeline.segmind`."""


class AuthenticationError(SegmindError):
    """401/403: the key is missing, wrong or not allowed this model. Aborts a whole batch."""


class ModelNotFound(AuthenticationError):
    """404 to a submit: no such model at SEGMIND_BASE_URL. Ends the run like a refused key."""


class InsufficientCredits(SegmindError):
    """406: the account has no credits left. Stops submitting; in-flight jobs finish first."""
