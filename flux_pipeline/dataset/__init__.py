"""Datasets a trainer loads, derived from built partitions (no API call).

- :mod:`~flux_pipeline.store.imagefolder`: ``images/partition=KEY/metadata.jsonl``, which
  makes the images folder a Hugging Face ``imagefolder`` (written by every build);
- :mod:`~flux_pipeline.dataset.shards`: WebDataset tar shards of a partition range;
- :mod:`~flux_pipeline.dataset.partitions`: choosing stored partitions, reading their lineage;
- :mod:`~flux_pipeline.commands.export`: ``flux-pipeline export``.

Nothing is imported here, so the command line parser stays light.
"""
