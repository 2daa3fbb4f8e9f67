"""The store: everything kept under the storage root (a local folder or ``s3://``).

Owns the object store (atomic writes, exclusive creates, compare-and-swap, request counts; the
local and S3 backends behind one interface), where each thing lives (:mod:`.layout`: every path
under the root), who made an image (:mod:`.provenance`), the lineage Parquet
dataset, ``metadata.jsonl``, the per-backend ledger, claims and their heartbeats, run heartbeats
and the account slots. May import :mod:`flux_pipeline.protocol` only: nothing above it.
"""
