"""Reports derived from built partitions: ``generation_metrics`` and contact sheets.

May import :mod:`flux_pipeline.store` (and below); nothing imports it but the assets.
"""
