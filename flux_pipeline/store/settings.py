"""The ``storage`` resource's field, declared once (``resources/storage.py`` subclasses it)."""

from __future__ import annotations

from flux_pipeline.settings import Settings, setting
from flux_pipeline.settings.environment import FLUX_STORAGE_ROOT


class StoreSettings(Settings):
    """Where the object store is."""

    root: str = setting(
        FLUX_STORAGE_ROOT.default,
        "fsspec URI of the storage root (FLUX_STORAGE_ROOT): a local folder or "
        "s3://bucket/prefix; S3 endpoint and credentials come from the standard AWS variables.",
    )
