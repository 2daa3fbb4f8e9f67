"""What a user types: ``flux-pipeline emulator | demo | plan | export``.

The top of the core: may import any stage below. Dagster is imported lazily, inside the two
commands that need it (``demo`` runs the job, ``plan --backfill`` reads a backfill).
"""
